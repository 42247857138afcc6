"""Gold answers parse for every row of every split of the real data: zero failures."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from cotkit.reading.answers import last_boxed
from cotkit.errors import DataError
from cotkit.types import AnswerKind

SPLITS = {
    "gsm8k": ("train", "test"),
    "bbh": ("test",),
    "math": ("test",),
    "math500": ("test", "train"),
    "arc:challenge": ("train", "test"),
    "svamp": ("test",),
}
CANONICAL_NUMBER = re.compile(r"-?(0|[1-9]\d*)(\.\d*[1-9])?")


@pytest.fixture(scope="module")
def make(data_dir):
    from cotkit import plugins

    patch = pytest.MonkeyPatch()
    patch.setenv(plugins.AUTOLOAD_OFF_ENV, "1")
    plugins.reset()
    yield lambda name, **kw: plugins.host().task(name, data_dir=data_dir, **kw)
    plugins.reset()
    patch.undo()


def _problems(example) -> str | None:
    """What is wrong with an example's gold answer, or None."""
    if not example.answer:
        return "empty answer"
    kind = example.answer_kind
    if kind is AnswerKind.NUMBER and not CANONICAL_NUMBER.fullmatch(example.answer):
        return f"number not canonical: {example.answer!r}"
    if kind is AnswerKind.CHOICE and example.answer not in {c.label for c in example.choices or []}:
        return f"answer {example.answer!r} is not a choice label"
    if kind is AnswerKind.TEXT and example.answer_set and example.answer not in example.answer_set:
        return f"answer {example.answer!r} not in {example.answer_set}"
    if kind is AnswerKind.MATH and example.answer.count("{") != example.answer.count("}"):
        return f"unbalanced braces in {example.answer!r}"
    return None


@pytest.mark.parametrize("name", sorted(SPLITS))
def test_zero_unparseable_gold_answers(make, name):
    task = make(name)
    failures, total = [], 0
    members = [task.member(sub) for sub in task.subsets] if name == "bbh" else [task]
    for split in SPLITS[name]:
        for member in members:
            for i, row in enumerate(member.rows(split)):
                total += 1
                try:
                    problem = _problems(member.example_from_row(row, i))
                except DataError as e:
                    problem = str(e)
                if problem:
                    failures.append(f"{member.full_name} {split} {i}: {problem}")
    assert total >= 1000
    assert failures == [], f"{len(failures)} of {total} gold answers failed: {failures[:5]}"


def test_gsm8k_numbers(make, data_dir):
    for split in ("train", "test"):
        raw = [json.loads(line) for line in (data_dir / "gsm8k" / f"{split}.jsonl").open()]
        examples = make("gsm8k").examples(split)
        for row, ex in zip(raw, examples, strict=True):
            tail = row["answer"].split("####")[-1].strip()
            assert float(ex.answer) == float(tail.replace(",", "")), (tail, ex.answer)
            assert "<<" not in (ex.rationale or "") and "####" not in (ex.rationale or "")
    answers = {ex.answer for ex in make("gsm8k").examples("test")}
    assert {"2125", "1450000", "-10", "-3"} <= answers  # commas removed, negatives kept


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("1,234", "1234"),
        ("$1,234.00", "1234"),
        ("-10", "-10"),
        ("0.50", "0.5"),
        (" 7 ", "7"),
        ("007", "7"),
        (145.0, "145"),
        (0.25, "0.25"),
        (3, "3"),
        ("-0", "0"),
        (".5", "0.5"),
        ("1e5", None),
        ("12a", None),
        ("", None),
    ],
)
def test_normalize_number(given, expected):
    from cotkit_plugins.tasks.common import normalize_number

    if expected is None:
        with pytest.raises(DataError, match="expected a number"):
            normalize_number(given, "here")
    else:
        assert normalize_number(given, "here") == expected


def test_math_answers_are_the_last_boxed(make, data_dir):
    math = make("math")
    for ex in math.examples("test"):
        assert ex.answer == last_boxed(ex.raw["solution"]).strip()
    # MATH-500 publishes `answer`; it agrees with the last \boxed{} of every solution (nested braces).
    m500 = make("math500").examples("test")
    assert all(ex.answer == last_boxed(ex.raw["solution"]) for ex in m500)
    nested = [ex for ex in m500 if "{" in ex.answer]
    assert len(nested) > 100
    ex = math.example_from_row(
        {"problem": "p", "solution": "So $x=\\boxed{\\frac{1}{\\sqrt{2}}}$, not \\boxed{2}? No: \\boxed{\\dfrac{3}{4}}."}, 0
    )
    assert ex.answer == "\\dfrac{3}{4}"
    levels = Counter(ex.meta["level"] for ex in math.examples("test"))
    assert levels == {5: 1324, 4: 1214, 3: 1131, 2: 894, 1: 437}


def _derived_bbh_table(data_dir) -> dict[str, dict]:
    """Each BBH task's kind and label set, derived from its targets alone."""
    table = {}
    for path in sorted((data_dir / "bbh" / "data").glob("*.json")):
        targets = [ex["target"] for ex in json.loads(path.read_text())["examples"]]
        letters = sum(bool(re.fullmatch(r"\([A-Z]\)", t)) for t in targets)
        if letters >= 0.99 * len(targets):
            table[path.stem] = {"kind": "choice"}
        elif all(re.fullmatch(r"-?\d+", t) for t in targets):
            table[path.stem] = {"kind": "number"}
        elif len(set(targets)) <= 3:
            table[path.stem] = {"kind": "text", "answer_set": sorted(set(targets))}
        else:
            table[path.stem] = {"kind": "text"}
    return table


def test_bbh_table_matches_the_data(data_dir):
    from cotkit_plugins.tasks.common import task_data

    shipped = task_data("bbh", "subtasks.yaml")
    derived = _derived_bbh_table(data_dir)
    assert set(shipped) == set(derived)
    for name, spec in shipped.items():
        normalized = {**spec, **({"answer_set": sorted(spec["answer_set"])} if "answer_set" in spec else {})}
        assert normalized == derived[name], name


def test_bbh_choices_and_irregular_targets(make):
    group = make("bbh")
    examples = group.examples("test")
    irregular = [(ex.id, ex.answer) for ex in examples if ex.meta.get("irregular_target")]
    assert irregular == [
        ("bbh:movie_recommendation/163", "Monsters, Inc"),
        ("bbh:ruin_names/99", "dearth, wind, & fire"),
        ("bbh:ruin_names/144", "rita, sue and bob poo"),
    ]
    kinds = Counter(ex.answer_kind for ex in examples)
    assert kinds == {AnswerKind.CHOICE: 4071, AnswerKind.TEXT: 1940, AnswerKind.NUMBER: 500}
    for ex in examples:
        if ex.answer_kind is AnswerKind.CHOICE:
            block = ex.question.rsplit("\nOptions:\n", 1)[1]
            assert [c.label for c in ex.choices] == re.findall(r"^\(([A-Z])\)", block, re.MULTILINE)
            assert ex.raw["target"] == f"({ex.answer})"
    colored = [ex for ex in examples if ex.task == "bbh:reasoning_about_colored_objects"]
    assert max(len(ex.choices) for ex in colored) == 18  # options (A)..(R)


def test_bbh_exemplar_answers_parse(make):
    for name in make("bbh").subsets:
        task = make(f"bbh:{name}")
        exemplars = task.exemplars(task.examples("test")[0])
        assert len(exemplars) == 3
        for ex in exemplars:
            assert _problems(ex.example) is None
            assert ex.rationale.endswith(f"{task.answer_sentence(ex.example)}")


def test_arc_labels_numeric_and_odd_option_counts(make):
    arc = make("arc:challenge")
    counts = Counter(len(ex.choices) for ex in arc.examples("test"))
    assert counts == {4: 1165, 3: 4, 5: 3}
    # The original data (not this copy) has numeric labels; make such rows, with 3 and 5 options.
    numeric = {
        "id": "n1",
        "question": "Which is a liquid?",
        "choices": {"text": ["ice", "steam", "water", "rock"], "label": ["1", "2", "3", "4"]},
        "answerKey": "3",
    }
    three = {
        "id": "t3",
        "question": "Pick one.",
        "choices": {"text": ["x", "y", "z"], "label": ["A", "B", "C"]},
        "answerKey": "C",
    }
    five = {"id": "f5", "question": "Pick one.", "choices": {"text": list("vwxyz"), "label": list("ABCDE")}, "answerKey": "E"}
    ex = arc.example_from_row(numeric, 0)
    assert ex.answer == "3" and [c.label for c in ex.choices] == ["1", "2", "3", "4"] and ex.id == "n1"
    assert "(3) water (CORRECT)" in arc.prompt(ex, "zeroshot", hint=True)
    assert "(1) ice\n(2) steam\n(3) water\n(4) rock" in arc.prompt(ex, "fewshot")
    assert arc.answer_sentence(ex) == "The answer is (3)."
    assert len(arc.example_from_row(three, 1).choices) == 3 and arc.example_from_row(three, 1).answer == "C"
    assert arc.example_from_row(five, 2).answer == "E" and "(E) z (CORRECT)" in arc.prompt(
        arc.example_from_row(five, 2), "fewshot", hint=True
    )
    with pytest.raises(DataError, match="answerKey '5'"):
        arc.example_from_row({**numeric, "answerKey": "5"}, 3)


def test_svamp_answers(make):
    for ex in make("svamp").examples("test"):
        assert float(ex.answer) == float(ex.raw["Answer"])
        assert ex.question.startswith(ex.raw["Body"].strip()) and ex.question.endswith(ex.raw["Question"].strip())
