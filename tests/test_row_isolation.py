"""No row's content changes another row's verdict, for every verifier and step scorer.

Each test scores a batch of real GSM8K or MATH-500 rows twice: once as it is, once with one row
replaced by a poison (a number longer than Python converts to text, brackets nested past the
recursion limit, 10^(10^10) for sympy, NaN and infinity, a lone surrogate). The other rows must keep
exactly the verdicts (or step scores) they had, and the poisoned row gets a verdict of its own.
Before this was so, one number of more than 4,300 digits turned a whole batch of up to 512
verdicts into `error`, correct ones included.
"""

from __future__ import annotations

import time

import pytest

from cotkit.harness.verify import verify_samples
from cotkit.types import Sample, Status

HUGE = "7" * 5000  # past Python's 4300-digit int-to-text limit
POISON_SLOT = 5  # the row replaced by a poison in every batch below


def essentials(verdicts) -> list[tuple]:
    """What a reader of the verdict file sees of each row."""
    return [(v.status, v.extracted, v.normalized, v.reason, v.score) for v in verdicts]


def others(items: list, slot: int = POISON_SLOT) -> list:
    return [x for i, x in enumerate(items) if i != slot]


@pytest.fixture(scope="module")
def gsm8k(data_dir):
    from cotkit.plugins import host

    task = host().task("gsm8k", data_dir=data_dir)
    return task, task.examples("test", limit=6)


@pytest.fixture(scope="module")
def math500(data_dir):
    from cotkit.plugins import host

    task = host().task("math500", data_dir=data_dir)
    return task, task.examples(task.eval_split, limit=7)


def with_poison(task, examples, completions: list[str], poison: str | None) -> list[Sample]:
    texts = list(completions)
    if poison is not None:
        texts[POISON_SLOT] = poison
    stop = task.stop_sequences("fewshot")
    return [Sample(example=ex, completion=text, stop=stop) for ex, text in zip(examples, texts)]


def assert_isolated(verifier, task, examples, completions: list[str], poison: str):
    """The poisoned batch's other verdicts equal the clean batch's; returns the poisoned row's verdict."""
    clean = verify_samples(with_poison(task, examples, completions, None), verifier)
    poisoned = verify_samples(with_poison(task, examples, completions, poison), verifier)
    assert essentials(others(poisoned)) == essentials(others(clean))
    return poisoned[POISON_SLOT]


# ----------------------------------------------------------------------------- exact_match


def gsm8k_completions(examples) -> list[str]:
    gold = [ex.answer for ex in examples]
    return [
        f"{examples[0].rationale} The answer is {gold[0]}.",  # correct
        f"The answer is {int(gold[1]) + 1}.",  # incorrect
        "I am not sure how to solve this.",  # unparseable
        f"So he runs {gold[3]} meters.\n\nQ: A farmer has 17 cows.",  # the last number, cut first
        f"\\boxed{{{gold[4]}}}",  # correct
        f"The answer is {gold[5]}.",  # the slot a poison takes
    ]


NUMBER_POISONS = {
    "huge number after the cue": f"The answer is {HUGE}.",
    "huge last number": f"Adding it all up we get {HUGE}",
    "huge fraction": f"The answer is 1/{HUGE}.",
    "5000 decimals": "The answer is 0." + "0" * 5000 + "1.",
    "a million digits": "The answer is " + "7" * 1_000_000 + ".",
    "huge boxed number": f"\\boxed{{{HUGE}}}",
}
OTHER_POISONS = {
    "deep brackets": "The answer is " + "(" * 100_000 + "18" + ")" * 100_000 + ".",
    "nested fractions": "\\boxed{" + "\\frac{1}{" * 3000 + "2" + "}" * 3000 + "}",
    "nan and inf": "The answer is nan, or inf.",
    "lone surrogate": "The answer is 64\ud800.",
    "nul byte": "The answer is \x00 64.",
}


@pytest.mark.parametrize("poison", [*NUMBER_POISONS.values(), *OTHER_POISONS.values()], ids=[*NUMBER_POISONS, *OTHER_POISONS])
def test_exact_match_judges_each_row_alone(gsm8k, poison):
    from cotkit_plugins.verifiers.exact_match import ExactMatch

    task, examples = gsm8k
    completions = gsm8k_completions(examples)
    started = time.monotonic()
    got = assert_isolated(ExactMatch(), task, examples, completions, poison)
    assert time.monotonic() - started < 30  # a million digits is read in linear time, not quadratic
    assert got.status is not Status.ERROR, got.reason
    if poison in NUMBER_POISONS.values():
        assert got.status is Status.INCORRECT and "digits" in got.reason and "compared as text" in got.reason


def test_exact_match_clean_batch_verdicts(gsm8k):
    """The verdicts the isolation tests protect are the ones a reader expects."""
    from cotkit_plugins.verifiers.exact_match import ExactMatch

    task, examples = gsm8k
    got = verify_samples(with_poison(task, examples, gsm8k_completions(examples), None), ExactMatch())
    assert [v.status.value for v in got] == ["correct", "incorrect", "unparseable", "correct", "correct", "correct"]


def test_a_long_number_still_equals_itself(gsm8k):
    """Kept as text, a number too long to read as a value is equal only to the same digits."""
    from cotkit.reading import answers

    pred = answers.extract_answer(f"The answer is {HUGE}.", "number").value
    assert pred.value is None and answers.numbers_equal(pred, answers.parse_gold_number("0" + HUGE))
    assert not answers.numbers_equal(pred, answers.parse_gold_number(HUGE + "1"))
    assert not answers.numbers_equal(pred, answers.parse_gold_number("18"))


# ----------------------------------------------------------------------------- math_equiv


@pytest.fixture(scope="module")
def math_equiv():
    from cotkit_plugins.verifiers.math_equiv import MathEquiv

    v = MathEquiv(timeout=3.0, workers=2)
    yield v
    v.close()


def math_completions(examples) -> list[str]:
    gold = [ex.answer for ex in examples]
    return [
        f"Converting, the point is \\boxed{{{gold[0]}}}.",  # correct, compared element by element
        "The answer is $\\boxed{p + q}$.",  # incorrect
        "So the sum is \\boxed{\\frac{28}{6}}.",  # equal value, but the question asks for a common fraction
        "I could not finish this one.",  # unparseable
        f"\\boxed{{{gold[4]}}}",  # correct (text)
        f"\\boxed{{{gold[5]}}}",  # the slot a poison takes
        "\\boxed{28}",  # incorrect
    ]


MATH_NUMBER_POISONS = {
    "huge integer": f"\\boxed{{{HUGE}}}",
    "huge fraction": f"\\boxed{{\\frac{{{HUGE}}}{{3}}}}",
    "5000 decimals": "\\boxed{0." + "0" * 5000 + "1}",
}
MATH_OTHER_POISONS = {
    "nested fractions": "\\boxed{" + "\\frac{1}{" * 3000 + "2" + "}" * 3000 + "}",
    "nested roots": "\\boxed{" + "\\sqrt{" * 3000 + "2" + "}" * 3000 + "}",
    "power tower": "\\boxed{10^{10^{10}}}",
    "nan": "\\boxed{NaN}",
    "infinity": "\\boxed{\\infty}",
    "lone surrogate": "\\boxed{42\ud800}",
}


@pytest.mark.parametrize(
    "poison", [*MATH_NUMBER_POISONS.values(), *MATH_OTHER_POISONS.values()], ids=[*MATH_NUMBER_POISONS, *MATH_OTHER_POISONS]
)
def test_math_equiv_judges_each_row_alone(math500, math_equiv, poison):
    task, examples = math500
    got = assert_isolated(math_equiv, task, examples, math_completions(examples), poison)
    assert got.status is not Status.ERROR, got.reason
    if poison in MATH_NUMBER_POISONS.values():
        assert got.status is Status.INCORRECT and "digits is too long" in got.reason
    if "\\frac{1}{\\frac" in poison or "\\sqrt{\\sqrt" in poison:
        assert got.status is Status.INCORRECT and "nested too deeply" in got.reason


def test_math_equiv_power_tower_is_stopped_by_the_time_limit(math500, math_equiv):
    """Against a gold with variables (`p - q`) sympy expands 10^(10^10) digit by digit: the worker
    is killed at the time limit, and the row's verdict is `timeout` (against a number it is
    compared numerically, at once, as the batch tests above show)."""
    _, examples = math500
    assert examples[1].answer == "p - q"
    started = time.monotonic()
    (got,) = verify_samples([Sample(examples[1], "\\boxed{10^{10^{10}}}")], math_equiv)
    assert got.status is Status.TIMEOUT and "time limit" in got.reason
    assert time.monotonic() - started < 30


def test_math_equiv_clean_batch_verdicts(math500, math_equiv):
    task, examples = math500
    got = verify_samples(with_poison(task, examples, math_completions(examples), None), math_equiv)
    assert [v.status.value for v in got] == ["correct", "incorrect", "incorrect", "unparseable", "correct", "correct", "incorrect"]


# ----------------------------------------------------------------------------- program


@pytest.fixture(scope="module")
def program_verifier(require_bwrap):
    from cotkit_plugins.verifiers.program import ProgramVerifier

    v = ProgramVerifier(cpu_seconds=1.0, wall_seconds=10, memory_mb=256, isolation="bwrap")
    yield v
    v.close()


def fenced(code: str) -> str:
    return f"Let me write a program.\n```python\n{code}\n```"


def solution(body: str) -> str:
    return fenced("def solution():\n" + "\n".join(f"    {line}" for line in body.splitlines()))


def program_completions(examples) -> list[str]:
    gold = [ex.answer for ex in examples]
    return [
        solution(f"eggs = 16 - 3 - 4\nreturn eggs * 2  # {gold[0]}"),  # correct
        solution(f"return {int(gold[1]) + 1}"),  # incorrect
        solution("return 1 / 0"),  # incorrect: runtime_error
        fenced(f"print({gold[3]})"),  # correct: the printed line
        "I would need to think about this more.",  # unparseable: no program
        solution(f"return {gold[5]}"),  # the slot a poison takes
    ]


PROGRAM_POISONS = {
    "prints a huge number": fenced(f"print('{HUGE}')"),
    "returns a huge number as text": solution(f"return '{HUGE}'"),
    "returns a huge fraction as text": solution(f"return '1/{HUGE}'"),
    "prints 10**5000": fenced("import sys\nsys.set_int_max_str_digits(0)\nprint(10 ** 5000)"),
    "prints 5000 decimals": fenced("print('0.' + '0' * 5000 + '1')"),
    "returns 10**5000": solution("return 10 ** 5000"),
    "returns a deeply nested list": solution("x = 1\nfor _ in range(100000):\n    x = [x]\nreturn x"),
    "returns nan": solution("return float('nan')"),
    "returns inf": solution("return float('inf')"),
    "returns a lone surrogate": solution("return '64\\ud800'"),
    "nested brackets in the source": fenced("x = " + "(" * 5000 + "1" + ")" * 5000 + "\nprint(x)"),
}


@pytest.mark.parametrize("poison", PROGRAM_POISONS.values(), ids=PROGRAM_POISONS)
def test_program_verifier_judges_each_row_alone(gsm8k, program_verifier, poison):
    task, examples = gsm8k
    got = assert_isolated(program_verifier, task, examples, program_completions(examples), poison)
    # whatever the program does, it is the program's verdict: never `error`
    assert got.status is not Status.ERROR, got.reason
    if poison != PROGRAM_POISONS["returns a lone surrogate"]:  # it states 64, the right answer; the others a wrong one
        assert got.status is Status.INCORRECT, got.reason


def test_program_verifier_clean_batch_verdicts(gsm8k, program_verifier):
    task, examples = gsm8k
    got = verify_samples(with_poison(task, examples, program_completions(examples), None), program_verifier)
    assert [v.status.value for v in got] == ["correct", "incorrect", "incorrect", "correct", "unparseable", "correct"]


def test_program_verifier_on_math_compares_each_row_alone(math500, program_verifier):
    """MATH programs' answers go through math_equiv; a huge printed number is that row's `incorrect`."""
    task, examples = math500
    completions = [solution(f"return {ex.answer!r}") for ex in examples]
    got = assert_isolated(program_verifier, task, examples, completions, fenced(f"print('{HUGE}')"))
    assert got.status is Status.INCORRECT and "digits is too long" in got.reason


# ----------------------------------------------------------------------------- any verifier


def test_a_verifier_that_crashes_on_one_row_costs_that_row_only(gsm8k):
    """verify_samples asks again row by row when a (third-party) verifier raises on a batch."""
    from cotkit.contracts import Verifier
    from cotkit.types import Verdict

    class Fragile(Verifier):
        name = "fragile"

        def verify(self, samples):
            if any("poison" in s.completion for s in samples):
                raise ValueError("cannot handle a poisoned completion")
            return [Verdict(Status.CORRECT if s.example.answer in s.completion else Status.INCORRECT) for s in samples]

    task, examples = gsm8k
    completions = gsm8k_completions(examples)
    got = assert_isolated(Fragile(), task, examples, completions, "a poison row")
    assert got.status is Status.ERROR and "ValueError: cannot handle a poisoned completion" in got.reason


# ----------------------------------------------------------------------------- step scorers


def scored(scorer, items):
    from cotkit.harness.stepsearch import score_many

    return score_many(scorer, items)


def assert_scores_isolated(scorer, examples, solutions: list[str], poison: str, tolerance: float = 0.0):
    """Step scores of the other solutions are the same with the poisoned one in the batch."""
    def items(texts):
        return [(ex, scorer.split(text, ex)) for ex, text in zip(examples, texts)]

    clean = scored(scorer, items(solutions))
    texts = list(solutions)
    texts[POISON_SLOT] = poison
    poisoned = scored(scorer, items(texts))
    for got, expected in zip(others(poisoned), others(clean)):
        assert got == pytest.approx(expected, abs=tolerance)
    return poisoned[POISON_SLOT]


def gsm8k_rationales(examples) -> list[str]:
    return [f"{ex.rationale} The answer is {ex.answer}." for ex in examples]


BIG_PRODUCT = " * ".join(["123456789012345678901234567890^40"] * 8)  # about 10,000 digits
ARITH_POISONS = {
    "a product of powers equal to a mixed number": f"So {BIG_PRODUCT} = 3 1/2.",
    "a product of powers equal to itself": f"So {BIG_PRODUCT} = {BIG_PRODUCT}.",
    "a wrong product of powers": f"So {BIG_PRODUCT} = 5.",
    "a huge written result": f"So 2 + 2 = {HUGE}.",
    "deep brackets": "So " + "(" * 5000 + "1+1" + ")" * 5000 + " = 2.",
    "lone surrogate": "So 1 + 1 = 2\ud800.",
}


@pytest.mark.parametrize("poison", ARITH_POISONS.values(), ids=ARITH_POISONS)
def test_arith_scores_each_solution_alone(gsm8k, poison):
    from cotkit_plugins.step_scorers.arith import ArithScorer

    _, examples = gsm8k
    got = assert_scores_isolated(ArithScorer(), examples, gsm8k_rationales(examples), poison)
    assert all(0.0 <= s <= 1.0 for s in got)
    if poison == ARITH_POISONS["a wrong product of powers"] or poison == ARITH_POISONS["a product of powers equal to a mixed number"]:
        assert got == [0.0]  # checked, and wrong: the product's magnitude needs no int-to-text conversion


@pytest.fixture(scope="module")
def exec_scorer(require_bwrap):
    from cotkit_plugins.step_scorers.exec import ExecScorer

    scorer = ExecScorer(cpu_seconds=1.0, isolation="bwrap")
    yield scorer
    scorer.close()


EXEC_PROGRAMS = [
    "def solution():\n    eggs = 16 - 3 - 4\n    money = eggs * 2\n    return money\n",
    "def solution():\n    bolts = 2 + 2 / 2\n    return bolts\n",
    "def solution():\n    cost = 80000 + 50000\n    value = cost / 0\n    return value\n",
    "def solution():\n    sprints = 3 * 3\n    return sprints * 60\n",
    "def solution():\n    feed = 60 - 15 - 25\n    return feed\n",
    "def solution():\n    glasses = 16 * 5 * 0.8\n    return glasses\n",
]
EXEC_POISONS = {
    "prints a huge number": "def solution():\n    x = '7' * 5000\n    print(x)\n    return x\n",
    "returns 10**5000": "def solution():\n    x = 10 ** 5000\n    return x\n",
    "nested brackets": "def solution():\n    x = " + "(" * 5000 + "1" + ")" * 5000 + "\n    return x\n",
    "lone surrogate": "def solution():\n    x = '\ud800'\n    return x\n",
    "nul byte": "def solution():\n    x = 1\x00\n    return x\n",
    "nan": "def solution():\n    x = float('nan')\n    return x\n",
}


@pytest.mark.parametrize("poison", EXEC_POISONS.values(), ids=EXEC_POISONS)
def test_exec_scores_each_program_alone(gsm8k, exec_scorer, poison):
    _, examples = gsm8k
    got = assert_scores_isolated(exec_scorer, examples, EXEC_PROGRAMS, poison)
    assert got and all(0.0 <= s <= 1.0 for s in got)


@pytest.fixture(scope="module")
def prm(tiny_model):
    from cotkit_plugins.step_scorers.prm import PRMScorer

    scorer = PRMScorer(model=str(tiny_model), unit="sentence")
    yield scorer
    scorer.close()


PRM_POISONS = {
    "lone surrogate": "She has 16 eggs \ud83d and eats 3.\nShe sells 9 \udc00 eggs.",
    "huge number": f"She has {HUGE} eggs.",
    "nul byte": "She has \x00 16 eggs.",
}


@pytest.mark.parametrize("poison", PRM_POISONS.values(), ids=PRM_POISONS)
def test_prm_scores_each_solution_alone(gsm8k, prm, poison):
    _, examples = gsm8k
    # padding the batch to a longer solution changes float rounding in the last bits only
    got = assert_scores_isolated(prm, examples, gsm8k_rationales(examples), poison, tolerance=1e-6)
    assert got and all(0.0 <= s <= 1.0 for s in got)
