"""`math_equiv`: one test per MATH pitfall, hard cases from real outputs, the time limit, and real data."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cotkit.reading.answers import last_boxed
from cotkit.reading.latex import answer_structure, extract_math_answer, normalize_answer
from cotkit.types import AnswerKind, Example, Sample, Status

QUESTION = "Compute the value."


@pytest.fixture(scope="module")
def verifier():
    from cotkit_plugins.verifiers.math_equiv import MathEquiv

    v = MathEquiv(timeout=2.0, workers=2)
    yield v
    v.close()


def sample(gold: str, completion: str, question: str = QUESTION, stop: list[str] | None = None) -> Sample:
    ex = Example("t", "math", question, gold, AnswerKind.MATH)
    return Sample(ex, completion, stop=stop or [])


def status(verifier, gold: str, completion: str, question: str = QUESTION) -> Status:
    return verifier.verify([sample(gold, completion, question)])[0].status


C, I = Status.CORRECT, Status.INCORRECT

# (gold, boxed answer, expected): the METHODS.md pitfalls and the brief's list, one row each.
PITFALLS = [
    ("\\frac12", "0.5", C),  # \frac12 = 0.5
    ("\\frac12", "\\dfrac{1}{2}", C),  # \dfrac
    ("\\frac{1}{2}", "\\tfrac12", C),  # \tfrac and unbraced arguments
    ("0.5", ".5", C),  # leading point
    ("18", "18.00", C),  # trailing zeros
    ("2\\sqrt{2}", "\\sqrt{8}", C),  # radicals simplify
    ("\\frac{\\sqrt{3}}{2}", "\\sqrt3/2", C),  # \sqrt3 and a slash
    ("\\frac{\\pi}{2}", "\\pi/2", C),  # pi forms
    ("\\frac{2\\pi}{3}", "2\\frac{\\pi}{3}", C),  # a product, not a mixed number
    ("\\frac{9}{5}", "1\\frac{4}{5}", C),  # a mixed number
    ("(1,3]", "\\left(1, 3\\right]", C),  # \left/\right
    ("(1,3]", "(1,3)", I),  # interval ends respected
    ("[-2,7]", "x \\in [-2, 7]", C),  # "x \in"
    ("(-\\infty,-8)\\cup(8,\\infty)", "(-\\infty, -8) \\cup (8, \\infty)", C),  # unions
    ("(3,-1)", "(3, -1)", C),  # ordered pairs
    ("(3,-1)", "(-1, 3)", I),  # ... element-wise, in order
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)", C),
    ("\\{1,2\\}", "\\{2, 1\\}", C),  # a set is unordered
    ("1 \\pm \\sqrt{19}", "1-\\sqrt{19}, 1+\\sqrt{19}", C),  # \pm stands for two answers
    ("\\begin{pmatrix} -1/3 \\\\ 2/3 \\end{pmatrix}", "\\begin{pmatrix} -\\frac13 \\\\ \\frac23 \\end{pmatrix}", C),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}", I),
    ("90^\\circ", "90", C),  # degrees
    ("25\\%", "25", C),  # percent
    ("\\$32,\\!348", "32348", C),  # dollars, thousands separators, \!
    ("5.4 \\text{ cents}", "5.4", C),  # units in \text
    ("864 \\mbox{ inches}^2", "864", C),  # units with a power
    ("12", "12 inches", C),  # unit words
    ("x=5", "5", C),  # "x = 5" -> 5
    ("5", "x = 5", C),
    ("52_8", "52", C),  # base subscripts
    ("\\text{(C)}", "C", C),  # choice letters
    ("\\text{Evelyn}", "Evelyn", C),  # words
    ("\\text{east}", "\\text{teas}", I),  # words are not products of symbols
    ("6+9i", "9i+6", C),  # complex numbers
    ("x^3+3x-6", "-6+3x+x^3", C),  # polynomials
    ("\\cot x", "\\frac{\\cos x}{\\sin x}", C),  # identities
    ("p-q", "q-p", I),
    ("3R^2", "3r^2", I),  # symbols keep their case
    ("\\frac13", "0.333", I),  # no tolerance: a rounded fraction is not the fraction
    ("y = 2x + 3", "2x + 3 = y", C),  # an equation with its sides swapped
    ("5x - 7y + 11z + 4 = 0", "-5x + 7y - 11z - 4 = 0", I),  # a normalized "= 0" form
    ("\\infty", "\\infty", C),
    ("-\\infty", "\\infty", I),
]


@pytest.mark.parametrize("gold,answer,expected", PITFALLS, ids=[f"{g} | {a}" for g, a, _ in PITFALLS])
def test_pitfall(verifier, gold, answer, expected):
    v = verifier.verify([sample(gold, f"So the answer is $\\boxed{{{answer}}}$.")])[0]
    assert v.status is expected, v.reason
    assert v.extracted == answer


def test_bare_lists_are_unordered_unless_the_question_asks_for_an_order(verifier):
    assert status(verifier, "1,-2", "\\boxed{-2, 1}", "Find all solutions, separated by commas.") is C
    assert status(verifier, "-2,1", "\\boxed{1, -2}", "List them in increasing order, separated by commas.") is I
    assert status(verifier, "-2,1", "\\boxed{-2, 1}", "List them in increasing order, separated by commas.") is C


# Hard cases distilled from PRM800K-rated outputs (written here, not copied): forms the question rules out.
FORMS = [
    ("\\frac{24}{125}", "72/375", "Express your answer as a common fraction.", I),
    ("\\frac{24}{125}", "\\frac{24}{125}", "Express your answer as a common fraction.", C),
    ("\\frac{639}{40}", "\\frac{31.95}{2}", "What is the distance, expressed as a fraction?", I),
    ("\\frac{-7x+8}{6}", "-\\frac{7x}{6}+\\frac{4}{3}", "Express your answer as a single fraction.", I),
    ("12\\sqrt{13}", "4\\sqrt{117}", "Express your answer in simplest radical form.", I),
    ("\\sqrt{3}-1", "\\frac{2}{\\sqrt{3}+1}", "Simplify and rationalize the denominator.", I),
    ("(5,7)", "5, 7", "Express your answer as an ordered pair.", I),
    ("50055", "5+50\\times7\\times11\\times13", "What is the sum?", I),
    ("y = -2x", "-2x", 'Enter the equation of this line in the form "$y = mx + b$".', I),
    ("y = -2x", "y=-2x", 'Enter the equation of this line in the form "$y = mx + b$".', C),
    ("\\frac{24}{125}", "72/375", "What is x?", C),  # no form asked: equivalence decides
]


@pytest.mark.parametrize("gold,answer,question,expected", FORMS, ids=[f"{g} | {a}" for g, a, _, _ in FORMS])
def test_requested_forms(verifier, gold, answer, question, expected):
    assert status(verifier, gold, f"\\boxed{{{answer}}}", question) is expected


def test_form_checks_can_be_turned_off():
    from cotkit_plugins.verifiers.math_equiv import MathEquiv

    v = MathEquiv(form_checks=False, workers=1)
    try:
        assert status(v, "12\\sqrt{13}", "\\boxed{4\\sqrt{117}}", "Express your answer in simplest radical form.") is C
    finally:
        v.close()


# ------------------------------------------------------------------------------ extraction


def test_next_problem_is_cut_before_taking_the_last_box(verifier):
    text = "The area is $\\boxed{12}$.\n\nProblem:\nWhat is 3+4?\n\nSolution: $\\boxed{7}$"
    v = verifier.verify([sample("12", text)])[0]
    assert v.status is C and v.extracted == "12"


def test_stop_sequences_of_the_sample_are_cut_first(verifier):
    v = verifier.verify([sample("12", "so $\\boxed{12}$. ###\nNext: $\\boxed{7}$", stop=["###"])])[0]
    assert v.extracted == "12" and v.status is C


@pytest.mark.parametrize(
    "completion,expected",
    [
        ("Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.", "\\frac{1}{2}"),  # Minerva
        ("We get 3.\n\n# Answer\n\n\\frac{1}{2}", "\\frac{1}{2}"),  # PRM800K
        ("Thus the answer is $\\$36$.", "\\$36"),
        ("The answer is 0.5.", "0.5"),
        ("Therefore $x = 7$.", "x = 7"),  # a final $...$
        ("$\\boxed{\\frac{1}{\\sqrt{2}}}$", "\\frac{1}{\\sqrt{2}}"),  # nested braces
        ("First \\boxed{3}, then corrected: \\boxed{4}", "4"),  # the last box
        ("\\boxed{3} and then \\boxed{", "3"),  # a truncated box does not hide the earlier one
        ("\\boxed{3}\n\n# Answer\n\n4", "4"),  # the cue stated last wins
    ],
)
def test_extraction_cues(completion, expected):
    got = extract_math_answer(completion)
    assert got is not None and got.text == expected


def test_no_answer_is_unparseable_not_incorrect(verifier):
    v = verifier.verify([sample("5", "I think we need to consider $x$ and then see.")])[0]
    assert v.status is Status.UNPARSEABLE and v.extracted is None


def test_bad_input_is_an_error_verdict(verifier):
    bad_gold = Sample(Example("e", "math", "q", "", AnswerKind.MATH), "\\boxed{1}")
    not_text = Sample(Example("e", "math", "q", "1", AnswerKind.MATH), None)  # type: ignore[arg-type]
    got = verifier.verify([bad_gold, not_text, "not a sample"])  # type: ignore[list-item]
    assert [v.status for v in got] == [Status.ERROR] * 3
    assert all(v.reason for v in got)


def test_verdicts_carry_extracted_and_normalized(verifier):
    v = verifier.verify([sample("\\frac{1}{2}", "so $\\boxed{\\dfrac12}$")])[0]
    assert (v.extracted, v.normalized, v.status) == ("\\dfrac12", "\\frac{1}{2}", C)
    assert v.to_dict()["verdict"] == "correct"


def test_normalization_and_structure_are_plain_text():
    assert normalize_answer("\\left( \\frac12, 10,\\!000 \\right)") == "(\\frac{1}{2},10,000)"
    assert normalize_answer("10,\\!000") == "10000"
    assert answer_structure("(1,3]") == ("tuple", "(", "]", [("scalar", "1"), ("scalar", "3")])


# ------------------------------------------------------------------------------ time limit


HANG = "9^{9^{9^{%d}}}"  # sympy evaluates the tower: minutes of big-integer work


def _timed(verifier, k: int) -> tuple[float, Status]:
    start = time.monotonic()
    v = verifier.verify([sample("1", f"\\boxed{{{HANG % (9 + k)}}}")])[0]
    return time.monotonic() - start, v.status


def test_hanging_sympy_is_a_timeout_from_the_main_thread(verifier):
    verifier.verify([sample("1", "\\boxed{2}"), sample("1/2", "\\boxed{0.5}")])  # workers up
    seconds, st = _timed(verifier, 0)
    assert st is Status.TIMEOUT
    assert seconds < verifier.config.timeout + 5
    assert status(verifier, "\\frac12", "\\boxed{0.5}") is C  # the host keeps working


def test_hanging_sympy_is_a_timeout_from_a_thread(verifier):
    got = {}
    t = threading.Thread(target=lambda: got.update(r=_timed(verifier, 1)))
    t.start()
    t.join(timeout=60)
    assert not t.is_alive() and got["r"][1] is Status.TIMEOUT
    assert got["r"][0] < verifier.config.timeout + 5


def test_hanging_sympy_is_a_timeout_from_a_thread_pool(verifier):
    with ThreadPoolExecutor(max_workers=2) as ex:
        results = list(ex.map(lambda k: _timed(verifier, k), [2, 3]))
    assert [st for _, st in results] == [Status.TIMEOUT] * 2
    assert max(s for s, _ in results) < 2 * verifier.config.timeout + 10
    assert status(verifier, "2\\sqrt{2}", "\\boxed{\\sqrt{8}}") is C


def test_close_stops_the_workers_and_verify_restarts_them():
    from cotkit_plugins.verifiers.math_equiv import MathEquiv

    v = MathEquiv(workers=1)
    assert status(v, "2\\sqrt{2}", "\\boxed{\\sqrt{8}}") is C
    pids = v._pool.pids()
    assert pids
    v.close()
    assert v._pool.pids() == []
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert status(v, "\\sqrt{12}", "\\boxed{2\\sqrt{3}}") is C
    v.close()


def test_bad_options_are_config_errors():
    from cotkit.errors import ConfigError
    from cotkit_plugins.verifiers.math_equiv import MathEquiv

    for opts in ({"timeout": "soon"}, {"timeout": 0}, {"workers": 0}, {"colour": 1}, {"ordered_lists": "maybe"}):
        with pytest.raises(ConfigError):
            MathEquiv(**opts)


# ------------------------------------------------------------------------------ real data


def test_every_math500_gold_matches_itself_and_its_solution(verifier, data_dir):
    rows = [json.loads(line) for line in open(data_dir / "math" / "math500.jsonl", encoding="utf-8")]
    assert len(rows) == 500
    samples = []
    for r in rows:
        ex = Example(r["unique_id"], "math500", r["problem"], r["answer"], AnswerKind.MATH)
        samples += [Sample(ex, f"\\boxed{{{r['answer']}}}"), Sample(ex, r["solution"]), Sample(ex, f"The answer is ${r['answer']}$.")]
    verdicts = verifier.verify(samples)
    wrong = [(s.example.answer, s.completion[-80:], v.status.value, v.reason) for s, v in zip(samples, verdicts) if not v.correct]
    assert wrong == []


def test_every_math_test_solution_box_matches_itself(verifier, data_dir):
    golds = []
    for line in open(data_dir / "math" / "test.jsonl", encoding="utf-8"):
        golds.append(last_boxed(json.loads(line)["solution"]))
    assert len(golds) == 5000 and all(golds)
    samples = [Sample(Example(str(i), "math", "q", g, AnswerKind.MATH), f"so $\\boxed{{{g}}}$.") for i, g in enumerate(golds)]
    assert all(v.correct for v in verifier.verify(samples))
