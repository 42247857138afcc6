"""Step scorers: splitting completions into steps, and the arith, exec and prm scorers."""

from __future__ import annotations

import json
import re

import pytest

from cotkit.errors import ConfigError, UnknownNameError
from cotkit.reading.steps import split_program, split_text
from cotkit.types import AnswerKind, Example

EXAMPLE = Example(
    id="t/0", task="gsm8k", answer="18", answer_kind=AnswerKind.NUMBER,
    question="Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins "
    "for her friends every day with four. She sells the remainder at the farmers' market daily for $2 per "
    "fresh duck egg. How much in dollars does she make every day at the farmers' market?",
)  # fmt: skip

CORRECT = (
    "Janet's ducks lay 16 eggs a day. She uses 3 + 4 = 7 of them. So she sells 16 - 7 = 9 eggs. "
    "Each sells for $2, so she makes 9 * $2 = $18 every day. The answer is 18."
)
WRONG = (
    "Janet's ducks lay 16 eggs a day. She uses 3 + 4 = 7 of them. So she sells 16 - 7 = 8 eggs. "
    "Each sells for $2, so she makes 8 * $2 = $16 every day. The answer is 16."
)


# --------------------------------------------------------------------------------- splitting


def test_text_steps_are_sentences_or_lines_and_join_back():
    steps = split_text(CORRECT)
    assert "".join(steps) == CORRECT and len(steps) == 5
    assert steps[3] == "Each sells for $2, so she makes 9 * $2 = $18 every day. "
    # decimals, "e.g." and blank lines do not start a step; blank lines stay with the step before
    text = "It costs $2.50, e.g. the red one.\n\nThen 3 more.\nDone"
    assert split_text(text) == ["It costs $2.50, e.g. the red one.\n\n", "Then 3 more.\n", "Done"]
    assert split_text(text, "line") == ["It costs $2.50, e.g. the red one.\n\n", "Then 3 more.\n", "Done"]
    assert split_text("a. B\x0cc", "line") == ["a. B\x0cc"]  # only \n, \r\n and \r end lines
    with pytest.raises(UnknownNameError, match="step unit 'paragraph'"):
        split_text("x", "paragraph")


PROGRAM = """def solution():
    eggs = 16
    # what she uses
    used = 3 + 4
    total = 0
    for i in range(eggs - used):
        total += 2
    return total
"""


def test_program_steps_are_statements():
    split = split_program(PROGRAM)
    assert "".join(split.steps) == PROGRAM
    assert split.steps == [
        "def solution():\n    eggs = 16\n",  # a header forms one step with the first statement of its body
        "    # what she uses\n    used = 3 + 4\n",  # comments go with the statement after them
        "    total = 0\n",
        "    for i in range(eggs - used):\n        total += 2\n",
        "    return total\n",
    ]
    assert split.complete == 5 and split.tail == "" and split.returned


def test_program_fences_bodies_and_unfinished_statements():
    fenced = "Here it is:\n```python\nx = (1 +\n     2)\ny = x * 3\n```\nSo the answer is 9."
    split = split_program(fenced)
    assert "".join(split.steps) == fenced and len(split.steps) == 2 and split.closed
    assert split.steps[0].startswith("Here it is:\n```python\nx = (1 +") and split.steps[1].endswith("answer is 9.")
    body = "    a = 5\n    b = a * 2\n    return b\n"  # the prompt ended with `def solution():`
    split = split_program(body)
    assert split.steps == ["    a = 5\n", "    b = a * 2\n", "    return b\n"] and split.body_only and split.returned
    cut = "def solution():\n    a = 5\n    b = (a +\n"
    split = split_program(cut)
    assert split.steps == ["def solution():\n    a = 5\n", "    b = (a +\n"] and split.tail == "incomplete"
    broken = "def solution():\n    a = 5\n    b = = 3\n    c = 4\n"
    split = split_program(broken)
    assert split.complete == 1 and split.tail == "invalid" and "".join(split.steps) == broken
    assert split_program("").steps == []


# -------------------------------------------------------------------------------------- arith


@pytest.fixture
def arith(host):
    return host.get("step_scorer", "arith")()


def test_arith_scores_a_correct_and_an_incorrect_rationale(arith):
    good = arith.score_steps(EXAMPLE, arith.split(CORRECT, EXAMPLE))
    bad = arith.score_steps(EXAMPLE, arith.split(WRONG, EXAMPLE))
    # 0.0: a wrong calculation; 1.0: calculations that hold, or none to check (the neutral default)
    assert good == [1.0, 1.0, 1.0, 1.0, 1.0]
    assert bad == [1.0, 1.0, 0.0, 1.0, 1.0]  # 8 * $2 = $16 is right, given the wrong 8
    graded = arith.__class__(neutral=0.5)
    assert graded.score_steps(EXAMPLE, graded.split(WRONG)) == [0.5, 1.0, 0.0, 1.0, 0.5]


CASES = [
    ("She sells 16 - 3 - 4 = 9 eggs", [True]),
    ("So 5 + 3 = 9 apples.", [False]),
    ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.", [True, True]),
    ("It costs <<3*4=13>>13 dollars", [False]),
    ("$1,200 x 3 = $3,600.", [True]),
    ("(3 + 4) × 2 = 14 and 12 ÷ 4 = 3", [True, True]),
    ("2^10 = 1024", [True]),
    ("20% of 50 = 10", [True]),
    ("50 * 20% = 10", [True]),
    ("25% + 15% = 40%", [True]),
    ("1/4 = 25%", [True]),
    ("50 + 10% = 55", []),  # ambiguous: not checked
    ("10/3 = 3.33 and 2/3 = 0.66", [True, True]),  # rounded or truncated at the written decimals
    ("10/3 = 3", [False]),  # an integer result must be exact
    ("2 * 3 = 6 * 2 = 12", [True, True]),  # a sloppy chain, link by link
    ("2 * 3 = 7 * 2 = 14", [False, True]),
    ("2 - 1/2 = 1 1/2", [True]),
    ("5/0 = 3", [False]),
    ("-3 + 5 = 2", [True]),
    ("The answer is 18.", []),
    ("x = 5 and 4x-7+8x-14 = 239", []),  # algebra, not arithmetic
    ("There are 60 students x 2/3 = 40 students", []),  # a left side with words is not checked
    ("He works M + 4 + 2 = 8 hours", []),
    ("leave at 0900-0130 = 0730", []),  # clock times
    ("he has 12*1000= 12,000MB", []),
    ("2^100000 = 5 and 9**9**9 = 1", []),  # powers too large to check are skipped, not computed
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_arith_statements(text, expected):
    from cotkit_plugins.step_scorers.arith import check_arithmetic

    assert [c.ok for c in check_arithmetic(text)] == expected


def test_arith_never_evaluates_code(arith):
    from cotkit_plugins.step_scorers.arith import Unchecked, check_arithmetic, evaluate

    for expression in ("__import__('os').system('true')", "(1).__class__", "[1] * 3", "f(2)", "2 if 1 else 3"):
        with pytest.raises(Unchecked):
            evaluate(expression)
    assert check_arithmetic("__import__('os').system('true') + 1 = 1") == []
    assert evaluate("1,000 + $2.50") == pytest.approx(1002.5)


def test_arith_on_gsm8k_gold_rationales(data_dir, arith):
    """Every calculator annotation of real GSM8K rationales checks; changing its result fails the step."""
    from cotkit_plugins.step_scorers.arith import check_arithmetic

    rows = [json.loads(line) for line in (data_dir / "gsm8k" / "train.jsonl").open()][:300]
    annotation = re.compile(r"<<([^<>=]+)=([^<>=]+)>>")
    checked = wrong_text = 0
    for row in rows:
        rationale = row["answer"].split("####")[0]
        for m in annotation.finditer(rationale):
            assert [c.ok for c in check_arithmetic(m.group(0))] == [True], m.group(0)
            off = f"<<{m.group(1)}={m.group(2)}1>>"  # 24 -> 241
            assert [c.ok for c in check_arithmetic(off)] == [False], off
            checked += 1
        steps = arith.split(rationale)
        assert "".join(steps) == rationale
        wrong_text += 0.0 in arith.score_steps(None, steps)
    assert checked > 800
    # the written text around annotations agrees with them in nearly every gold rationale
    assert wrong_text <= 5


# --------------------------------------------------------------------------------------- exec


@pytest.fixture
def exec_scorer(host):
    scorer = host.get("step_scorer", "exec")(cpu_seconds=0.5)
    yield scorer
    scorer.close()


def test_exec_scores_a_good_and_a_crashing_program(exec_scorer):
    good = PROGRAM.replace("    total = 0\n", "    total = 0\n    print(total)\n")
    steps = exec_scorer.split(good)
    # print binds nothing new (neutral); every other statement runs and binds a name; return returns
    assert exec_scorer.score_steps(EXAMPLE, steps) == [1.0, 1.0, 1.0, 0.5, 1.0, 1.0]
    crashing = "def solution():\n    eggs = 16\n    per_day = eggs / 0\n    left = eggs - 7\n    return left\n"
    # the crash and every step after it (their prefixes contain it) score 0
    assert exec_scorer.score_steps(EXAMPLE, exec_scorer.split(crashing)) == [1.0, 0.0, 0.0, 0.0]
    # a bare function body (the prompt ended with `def solution():`) runs as the body of solution()
    assert exec_scorer.score_steps(EXAMPLE, ["    a = 5\n", "    b = a * 2\n", "    return b\n"]) == [1.0, 1.0, 1.0]


def test_exec_on_the_pal_exemplar_programs(exec_scorer):
    """The 8 PAL GSM8K programs PaD's teacher is prompted with: every statement runs and binds a name;
    a misspelt name makes its step and every later one fail."""
    from importlib.resources import files

    import yaml

    exemplars = yaml.safe_load((files("cotkit_tasks") / "pad" / "programs.yaml").read_text())
    assert len(exemplars) == 8
    items = [(None, exec_scorer.split(e["program"])) for e in exemplars]
    for (_, steps), e in zip(items, exemplars):
        assert "".join(steps) == e["program"] and len(steps) >= 4
    for scores in exec_scorer.score_many(items):
        assert scores == [1.0] * len(scores)
    steps = items[0][1]
    broken = [*steps[:2], steps[2].replace("=", "= undefined_name +", 1), *steps[3:]]
    assert exec_scorer.score_steps(None, broken) == [1.0, 1.0] + [0.0] * (len(steps) - 2)


def test_exec_unfinished_invalid_and_endless_prefixes(exec_scorer):
    assert exec_scorer.score_steps(None, ["def solution():\n    a = 5\n", "    b = (a +\n"]) == [1.0, 0.5]
    assert exec_scorer.score_steps(None, ["def solution():\n    a = 5\n", "    b = = 3\n"]) == [1.0, 0.0]
    endless = ["x = 0\n", "while True:\n    x += 1\n"]
    assert exec_scorer.score_steps(None, endless) == [1.0, 0.0]
    assert exec_scorer.score_steps(None, ["The answer is 18."]) == [0.0]


def test_exec_uses_one_sandbox_closed_by_close(exec_scorer):
    assert exec_scorer._sandbox is None  # nothing starts until a program runs
    exec_scorer.score_steps(None, ["a = 1\n"])
    sandbox = exec_scorer._sandbox
    exec_scorer.score_many([(None, ["b = 2\n"]), (None, ["c = 3\n", "d = c\n"])])
    assert exec_scorer._sandbox is sandbox
    exec_scorer.close()
    assert exec_scorer._sandbox is None and sandbox._closed


def test_scorer_options_are_checked(host):
    with pytest.raises(ConfigError, match="no option 'nuetral'"):
        host.get("step_scorer", "exec")(nuetral=1)
    with pytest.raises(ConfigError, match="unit"):
        host.get("step_scorer", "arith")(unit="word")
    with pytest.raises(ConfigError, match="step_tag"):
        host.get("step_scorer", "prm")(step_tag=" ")


# ---------------------------------------------------------------------------------------- prm


@pytest.fixture(scope="module")
def prm(tiny_model):
    from cotkit_plugins.step_scorers.prm import PRMScorer

    scorer = PRMScorer(model=str(tiny_model))
    yield scorer
    scorer.close()


def test_prm_mechanics_on_the_tiny_model(prm, tiny_model):
    from cotkit_plugins.step_scorers.prm import PRMScorer

    steps = prm.split("She uses 3 + 4 = 7.\nShe sells 16 - 7 = 9.\nThe answer is 18.")
    assert len(steps) == 3
    text, ends = prm.render(EXAMPLE, steps)
    assert text.startswith(EXAMPLE.question + " Step 1: She uses 3 + 4 = 7. ки\nStep 2:")
    assert [text[e - len(" ки") : e] for e in ends] == [" ки"] * 3  # a tag after every step
    scores = prm.score_steps(EXAMPLE, steps)
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)
    assert prm.score_steps(EXAMPLE, steps) == scores  # deterministic
    again = PRMScorer(model=str(tiny_model))
    try:
        assert again.score_steps(EXAMPLE, steps) == pytest.approx(scores, abs=1e-6)
    finally:
        again.close()
    # batched with other (padded) solutions, or cut after step 2, the scores are the same (a causal model)
    batch = prm.score_many([(EXAMPLE, steps[:2]), (EXAMPLE, steps), (EXAMPLE, []), (None, ["x"])])
    assert batch[0] == pytest.approx(scores[:2], abs=1e-5) and batch[1] == pytest.approx(scores, abs=1e-5)
    assert batch[2] == [] and len(batch[3]) == 1


def test_prm_label_tokens_must_be_single_tokens(tiny_model):
    from cotkit_plugins.step_scorers.prm import PRMScorer

    scorer = PRMScorer(model=str(tiny_model), good_token="excellent step")
    try:
        with pytest.raises(ConfigError, match="good_token 'excellent step' is .* tokens"):
            scorer.score_steps(EXAMPLE, ["a"])
    finally:
        scorer.close()
