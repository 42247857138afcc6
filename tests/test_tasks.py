"""The built-in tasks on the real data: splits and counts, carving, prompts, errors for bad rows and missing data."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from cotkit.contracts import PROMPT_STYLES
from cotkit.errors import ConfigError, DataError, UnknownNameError
from cotkit.types import AnswerKind
from cotkit_plugins.tasks.bbh import SUBTASKS as BBH_TASKS

# task -> {split: rows} for every publisher or carved split (the shared data has no ARC validation split).
COUNTS = {
    "gsm8k": {"train": 7473, "test": 1319},
    "bbh": {"test": 6511, "train": 4350, "heldout": 2161},
    "math": {"test": 5000, "train": 4500, "heldout": 500},
    "math500": {"test": 500, "train": 4500},
    "arc:challenge": {"train": 1056, "test": 1172},
    "svamp": {"test": 1000, "train": 700, "heldout": 300},
}
# Exemplars in each task's `fewshot` prompt.
SHOTS = {"gsm8k": 8, "svamp": 8, "math": 4, "math500": 4, "arc:challenge": 5, "bbh:navigate": 3, "bbh:date_understanding": 3}


@pytest.fixture(scope="module")
def tasks(data_dir):
    """One task object per name, loaded from ../shared/data and shared by the tests of this module."""
    from cotkit import plugins

    patch = pytest.MonkeyPatch()
    patch.setenv(plugins.AUTOLOAD_OFF_ENV, "1")
    plugins.reset()
    made = {}

    def get(name: str, **options):
        key = (name, tuple(sorted(options.items())))
        if key not in made:
            made[key] = plugins.host().task(name, data_dir=data_dir, **options)
        return made[key]

    yield get
    plugins.reset()
    patch.undo()


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_split_sizes(tasks, name):
    task = tasks(name)
    for split, n in COUNTS[name].items():
        assert len(task.rows(split)) == n, split
        examples = task.examples(split)
        assert len(examples) == n, split
        assert len({e.id for e in examples}) == n, f"{split}: ids not unique"
        assert all(e.raw is row for e, row in zip(examples, task.rows(split), strict=True)), "raw must be the publisher row"


def test_bbh_subtasks_and_carve(tasks, data_dir):
    group = tasks("bbh")
    assert group.subsets == BBH_TASKS
    by_task: dict[str, int] = {}
    for ex in group.examples("test"):
        by_task[ex.task] = by_task.get(ex.task, 0) + 1
    for name in BBH_TASKS:
        published = json.loads((data_dir / "bbh" / "data" / f"{name}.json").read_text())["examples"]
        assert by_task[f"bbh:{name}"] == len(published)
        task = tasks(f"bbh:{name}")
        assert task.rows("test") == published
        test_ids = [e.id for e in task.examples("test")]
        train = [e.id for e in task.examples("train")]
        heldout = [e.id for e in task.examples("heldout")]
        assert not set(train) & set(heldout) and sorted(train + heldout) == sorted(test_ids)
        assert len(heldout) == len(published) // 3
    # The carve depends on carve_seed only, and changes with it.
    again = tasks("bbh:navigate", carve_seed="0").examples("heldout")
    assert [e.id for e in again] == [e.id for e in tasks("bbh:navigate").examples("heldout")]
    other = tasks("bbh:navigate", carve_seed="7").examples("heldout")
    assert [e.id for e in other] != [e.id for e in again]


def test_math_local_splits_follow_prm800k(tasks):
    math, m500 = tasks("math"), tasks("math500")
    train = {e.id for e in math.examples("train")}
    heldout = {e.id for e in math.examples("heldout")}
    assert not train & heldout and train | heldout == {e.id for e in math.examples("test")}
    assert {e.question for e in math.examples("heldout")} == {e.question for e in m500.examples("test")}
    assert {e.question for e in m500.examples("train")} == {e.question for e in math.examples("train")}
    assert m500.examples("test")[0].id.startswith("test/") and m500.examples("test")[0].id.endswith(".json")


def test_math_subject_and_level_filters(tasks):
    algebra = tasks("math:algebra")
    assert len(algebra.examples("test")) == 1187
    assert {e.task for e in algebra.examples("test")} == {"math:algebra"}
    hard = tasks("math", level="4,5")
    assert len(hard.examples("test")) == 1214 + 1324
    assert {e.meta["level"] for e in hard.examples("heldout")} == {4, 5}
    two = tasks("math", subject="Counting & Probability,geometry", level="Level 5")
    assert {e.meta["subject"] for e in two.examples("test")} == {"counting_and_probability", "geometry"}
    assert {e.meta["level"] for e in two.examples("test")} == {5}
    assert len(tasks("math500", level="5").examples("test")) == 134
    with pytest.raises(UnknownNameError, match="algebr"):
        tasks("math", subject="algebr")
    with pytest.raises(ConfigError, match="level"):
        tasks("math", level="6")
    with pytest.raises(ConfigError, match="excludes"):
        tasks("math:algebra", subject="geometry")
    with pytest.raises(UnknownNameError, match="option"):
        tasks("gsm8k", subject="x")


def test_arc_needs_a_subset(host, data_dir):
    with pytest.raises(ConfigError, match="arc:challenge or arc:easy"):
        host.task("arc", data_dir=data_dir)


@pytest.mark.parametrize("name", ["gsm8k", "bbh", "bbh:snarks", "math", "math500", "arc:challenge", "svamp"])
def test_dev_fit_are_deterministic_and_disjoint(tasks, host, data_dir, name):
    task = tasks(name)
    train = [e.id for e in task.examples(task.train_split)]
    dev = [e.id for e in task.examples("dev")]
    fit = [e.id for e in task.examples("fit")]
    assert dev and fit and not set(dev) & set(fit)
    assert sorted(dev + fit) == sorted(train)
    assert len(dev) == max(1, min(500, len(train) // 10))
    fresh = host.task(name, data_dir=data_dir)
    assert [e.id for e in fresh.examples("dev")] == dev
    reseeded = host.task(name, data_dir=data_dir, split_seed=99)
    assert [e.id for e in reseeded.examples("dev")] != dev
    assert [e.id for e in task.examples("dev", limit=3)] == dev[:3]
    assert not set(train) & {e.id for e in task.examples(task.heldout_split)}


# ---------------------------------------------------------------------------------------- prompts


def _count_queries(task_name: str, text: str) -> int:
    marker = "Problem:\n" if task_name.startswith("math") else "Q: "
    return text.count(marker)


@pytest.mark.parametrize("name", sorted(SHOTS))
def test_prompt_styles(tasks, name):
    task = tasks(name)
    example = task.examples(task.heldout_split)[0]
    fewshot = task.prompt(example, "fewshot")
    assert isinstance(fewshot, str) and _count_queries(name, fewshot) == SHOTS[name] + 1
    assert example.question in fewshot and "(CORRECT)" not in fewshot and "Hint:" not in fewshot
    assert fewshot.count(task.cue) >= SHOTS[name]  # every exemplar ends with the task's answer cue
    zeroshot = task.prompt(example, "zeroshot")
    assert zeroshot.startswith("Q: ") and zeroshot.endswith("\nA: Let's think step by step.")
    chat = task.prompt(example, "chat")
    assert [m["role"] for m in chat] == ["user"] and example.question in chat[0]["content"]
    assert task.cue in chat[0]["content"] and "step by step" in chat[0]["content"]
    assert task.answer_sentence(example).startswith(task.cue)
    if example.answer_kind is AnswerKind.CHOICE:
        for c in example.choices:
            assert f"({c.label}) {c.text}" in zeroshot
    stops = task.stop_sequences("fewshot")
    assert any(s in fewshot for s in stops)  # a model that goes on to the next question is cut there
    assert not any(s in ex.rationale for ex in task.exemplars(example) for s in stops)
    assert all(s in f"{zeroshot} ...\n\nQ: next" for s in task.stop_sequences("zeroshot"))
    assert task.stop_sequences("chat") == []
    with pytest.raises(UnknownNameError, match="prompt style"):
        task.prompt(example, "few-shot")


@pytest.mark.parametrize("name", sorted(SHOTS))
def test_hint_prompts_give_the_gold_answer(tasks, name):
    task = tasks(name)
    for example in task.examples(task.heldout_split)[:3]:
        for style in PROMPT_STYLES:
            prompt = task.prompt(example, style, hint=True)
            text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
            n = SHOTS[name] + 1 if style == "fewshot" else 1
            if example.answer_kind is AnswerKind.CHOICE:
                marked = next(c for c in example.choices if c.label == example.answer)
                assert len(re.findall(r"^\(\w+\) .* \(CORRECT\)$", text, re.MULTILINE)) == n
                assert f"({marked.label}) {marked.text} (CORRECT)" in text
                assert "Hint:" not in text
            else:
                assert text.count("Hint: ") == n and example.answer in text.rsplit("Hint: ", 1)[1]


def test_answer_sentences(tasks):
    def first(name, split="test"):
        task = tasks(name)
        return task, task.examples(split)[0]

    task, ex = first("gsm8k")
    assert task.answer_sentence(ex) == "The answer is 18."
    task, ex = first("bbh:date_understanding")
    assert task.answer_sentence(ex) == "So the answer is (B)."
    task, ex = first("bbh:boolean_expressions")
    assert task.answer_sentence(ex) == f"So the answer is {ex.raw['target']}."
    task, ex = first("math")
    assert task.answer_sentence(ex) == "The final answer is $2$."
    task, ex = first("arc:challenge")
    assert task.answer_sentence(ex) == f"The answer is ({ex.raw['answerKey']})."
    task, ex = first("svamp")
    assert task.answer_sentence(ex) == "The answer is 145."


def test_bbh_fewshot_is_the_official_prompt_verbatim(tasks, data_dir):
    for name in BBH_TASKS:
        task = tasks(f"bbh:{name}")
        example = task.examples("test")[0]
        official = (data_dir / "bbh" / "cot-prompts" / f"{name}.txt").read_text(encoding="utf-8")
        body = official.split("-----\n", 1)[1].strip("\n")
        assert task.prompt(example, "fewshot") == f"{body}\n\nQ: {example.question}\nA: Let's think step by step."


def test_bbh_group_prompts_use_each_examples_task(tasks):
    group = tasks("bbh")
    ex = next(e for e in group.examples("test") if e.task == "bbh:web_of_lies")
    assert group.prompt(ex) == tasks("bbh:web_of_lies").prompt(ex)


def test_bbh_prompts_fall_back_to_lm_eval_then_fail_clearly(tmp_path, data_dir, host, monkeypatch):
    pytest.importorskip("yaml")
    from cotkit_plugins.tasks import bbh

    (tmp_path / "bbh").mkdir()
    (tmp_path / "bbh" / "data").symlink_to(data_dir / "bbh" / "data", target_is_directory=True)
    if bbh._lm_eval_prompt_path("navigate") is None:
        pytest.skip("lm-eval is not installed")
    for name in BBH_TASKS:
        official = bbh.load_cot_prompt(name, data_dir)
        packaged = bbh.load_cot_prompt(name, tmp_path)
        assert packaged.source.endswith(f"cot_fewshot/{name}.yaml")
        assert packaged.description == official.description
        for (q1, _, r1), (q2, _, r2) in zip(official.exemplars, packaged.exemplars, strict=True):
            assert " ".join(q1.split()) == " ".join(q2.split()) and " ".join(r1.split()) == " ".join(r2.split())
    task = host.task("bbh:navigate", data_dir=tmp_path)
    assert task.prompt(task.examples("test")[0]).count("Q: ") == 4
    monkeypatch.setattr(bbh, "_lm_eval_prompt_path", lambda name: None)
    with pytest.raises(DataError, match=r"bbh/cot-prompts/navigate.txt .*pip install lm-eval"):
        task.prompt(task.examples("test")[0])
    assert task.prompt(task.examples("test")[0], "zeroshot")  # only few-shot needs the prompt files


# ----------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("name", "row", "message"),
    [
        ("gsm8k", {"question": "q"}, "missing field 'answer'"),
        ("gsm8k", {"answer": "#### 3"}, "missing field 'question'"),
        ("gsm8k", {"question": "q", "answer": "it is three"}, "no '#### <number>' line"),
        ("gsm8k", {"question": "q", "answer": "so\n#### three"}, "expected a number"),
        ("bbh:navigate", {"input": "x"}, "missing field 'target'"),
        ("bbh:navigate", {"input": "x", "target": "Maybe"}, "not one of Yes, No"),
        ("bbh:date_understanding", {"input": "no options", "target": "(A)"}, "no 'Options:' block"),
        ("bbh:date_understanding", {"input": "Q\nOptions:\n(A) x\n(B) y", "target": "(C)"}, "not one of the options"),
        ("bbh:object_counting", {"input": "x", "target": "many"}, "expected a number"),
        ("bbh", {"input": "x", "target": "True", "task": "bbh:nope"}, "not a BBH task"),
        ("math", {"solution": "\\boxed{1}"}, "missing field 'problem'"),
        ("math", {"problem": "p"}, "missing field 'solution' (or 'answer')"),
        ("math", {"problem": "p", "solution": "no box here"}, "no \\\\boxed"),
        ("arc:challenge", {"question": "q", "choices": {"label": ["A", "B"], "text": ["x", "y"]}}, "missing field 'answerKey'"),
        (
            "arc:challenge",
            {"question": "q", "choices": {"label": ["A", "B"], "text": ["x", "y"]}, "answerKey": "C"},
            "answerKey 'C'",
        ),
        (
            "arc:challenge",
            {"question": "q", "choices": {"label": ["A", "B"], "text": ["x"]}, "answerKey": "A"},
            "2 labels but 1 texts",
        ),
        ("arc:challenge", {"question": "q", "choices": ["x", "y"], "answerKey": "A"}, "field 'choices' must be"),
        ("svamp", {"Body": "b", "Question": "q"}, "missing field 'Answer'"),
        ("svamp", {"Body": "b", "Question": "q", "Answer": "n/a"}, "expected a number"),
    ],
)
def test_bad_rows_name_the_problem(tasks, name, row, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        tasks(name).example_from_row(row, 4)
    assert "row 4" in str(info.value)


def test_user_rows_in_publisher_format(tasks):
    ex = tasks("gsm8k").example_from_row({"question": "q", "answer": "1,234"}, 0)
    assert ex.answer == "1234" and ex.id == "gsm8k/row/0"
    ex = tasks("math").example_from_row({"problem": "p", "answer": "\\frac{1}{2}"}, 0)
    assert ex.answer == "\\frac{1}{2}" and ex.answer_kind is AnswerKind.MATH
    group = tasks("bbh")
    ex = group.example_from_row({"input": "x", "target": "valid", "task": "bbh:formal_fallacies"}, 0)
    assert ex.task == "bbh:formal_fallacies" and ex.answer_set == ["valid", "invalid"]
    # Without a `task` field the group infers the answer kind from the row's shape.
    ex = group.example_from_row({"input": "Which?\nOptions:\n(A) x\n(B) y", "target": "(B)"}, 1)
    assert ex.answer_kind is AnswerKind.CHOICE and ex.answer == "B" and ex.task == "bbh"
    assert group.example_from_row({"input": "2+2", "target": "4"}, 2).answer_kind is AnswerKind.NUMBER
    assert group.example_from_row({"input": "x", "target": "False"}, 3).answer_set == ["True", "False"]
    assert group.example_from_row({"input": "x", "target": "] )"}, 4).answer_set is None


# ---------------------------------------------------------------------------------- missing data


@pytest.mark.parametrize(
    ("name", "split", "missing"),
    [
        ("gsm8k", "test", "gsm8k/test.jsonl"),
        ("bbh:navigate", "test", "bbh/data/navigate.json"),
        ("bbh", "heldout", "bbh/data/boolean_expressions.json"),
        ("math", "train", "math/test.jsonl"),
        ("math500", "test", "math/math500.jsonl"),
        ("arc:easy", "test", "arc/ARC-Easy-test.jsonl"),
        ("svamp", "train", "svamp/test.jsonl"),
    ],
)
def test_empty_data_dir_says_what_is_missing(host, tmp_path, name, split, missing):
    task = host.task(name, data_dir=tmp_path)
    with pytest.raises(DataError) as info:
        task.examples(split)
    message = str(info.value)
    assert missing in message and str(tmp_path) in message


def test_math500_mismatch_is_refused(host, tmp_path, data_dir):
    (tmp_path / "math").mkdir()
    test = (data_dir / "math" / "test.jsonl").read_text().splitlines()
    (tmp_path / "math" / "test.jsonl").write_text("\n".join(test[:1000]) + "\n")
    (tmp_path / "math" / "math500.jsonl").symlink_to(data_dir / "math" / "math500.jsonl")
    with pytest.raises(DataError, match="MATH-500 problems are not in the MATH test split"):
        host.task("math500", data_dir=tmp_path).examples("train")


def test_no_data_dir_and_offline_hub_fails_fast(tmp_path):
    """Without a data dir the hub is tried; offline, each task fails at once with how to fix it."""
    env = {k: v for k, v in os.environ.items() if k != "COTKIT_DATA_DIR"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), COTKIT_DISABLE_PLUGIN_AUTOLOAD="1")
    script = (
        "import json\n"
        "from cotkit.plugins import host\n"
        "from cotkit.errors import DataError\n"
        "out = {}\n"
        "for name in ['gsm8k', 'bbh:navigate', 'math:algebra', 'math500', 'arc:easy', 'svamp']:\n"
        "    try:\n"
        "        host().task(name).examples('test')\n"
        "        out[name] = 'loaded'\n"
        "    except DataError as e:\n"
        "        out[name] = str(e)\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    hubs = {
        "gsm8k": "openai/gsm8k",
        "bbh:navigate": "lukaemon/bbh",
        "math:algebra": "EleutherAI/hendrycks_math",
        "math500": "HuggingFaceH4/MATH-500",
        "arc:easy": "allenai/ai2_arc",
        "svamp": "ChilleD/SVAMP",
    }
    for name, hub in hubs.items():
        assert hub in out[name] and "--data-dir" in out[name] and "COTKIT_DATA_DIR" in out[name], out[name]


def test_without_a_data_dir_an_unreachable_hub_fails_at_once_in_one_line(tmp_path):
    """No 25 s of retries and six warnings: one probe of the hub's host, then one line naming what to do."""
    env = {k: v for k, v in os.environ.items() if k != "COTKIT_DATA_DIR"}
    # a closed local port stands for a hub that does not answer; an empty cache holds no dataset
    env.update({"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf"), "COTKIT_DISABLE_PLUGIN_AUTOLOAD": "1"})
    done = subprocess.run([sys.executable, "-m", "cotkit", "sample", "--task", "gsm8k", "--limit", "1"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Retrying" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "the hub cannot be reached (127.0.0.1:9" in line and "--data-dir" in line
