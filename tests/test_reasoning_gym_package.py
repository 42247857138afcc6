"""The third-party package packages/cotkit-reasoning-gym, installed (editable) by scripts/setup.sh.

Its plugins load through the `cotkit` entry-point group like any installed package's, so these
tests build a plugin host with autoload on (the `host` fixture has it off).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cotkit.errors import ConfigError, UnknownNameError
from cotkit.plugins import PluginHost
from cotkit.testing import check_task_contract, check_verifier_contract
from cotkit.types import AnswerKind, Sample, Status

#: Small splits, so every test generates in well under a second.
SMALL = {"train_size": 40, "heldout_size": 12}
#: A sum of two 1-digit numbers: a question space of a few hundred, so the splits must dedupe.
ONE_DIGIT_SUMS = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}


@pytest.fixture(scope="module")
def rg_host() -> PluginHost:
    host = PluginHost(autoload=True)
    assert "rg" in host.names("task"), "cotkit-reasoning-gym is not installed: run scripts/setup.sh"
    return host


def questions(task, split: str) -> list[str]:
    return [ex.question for ex in task.examples(split)]


def test_the_package_shows_in_cotkit_plugins_and_show_lists_its_options():
    env = {k: v for k, v in os.environ.items() if k != "COTKIT_DISABLE_PLUGIN_AUTOLOAD"}
    listed = subprocess.run([sys.executable, "-m", "cotkit", "plugins", "--json"], capture_output=True, text=True, env=env, check=True)
    rows = {(r["kind"], r["name"]): r for r in json.loads(listed.stdout)}
    for key in (("task", "rg"), ("verifier", "rg_score")):
        assert rows[key]["provider"] == "cotkit-reasoning-gym" and rows[key]["source"] == "entrypoint"
    assert {"chain_sum", "basic_arithmetic", "spell_backward"} <= set(rows[("task", "rg")]["subsets"])
    shown = subprocess.run([sys.executable, "-m", "cotkit", "show", "rg"], capture_output=True, text=True, env=env, check=True)
    assert all(name in shown.stdout for name in ("train_size", "heldout_size", "shots", "seed", "(any other)"))


def test_the_dataset_list_is_the_installed_reasoning_gyms():
    from cotkit_reasoning_gym.generators import DATASETS
    from reasoning_gym.factory import DATASETS as REGISTRY

    assert set(DATASETS) == set(REGISTRY) - {"composite"}


@pytest.mark.parametrize(
    ("address", "options"),
    [("rg:chain_sum", ONE_DIGIT_SUMS), ("rg:basic_arithmetic", {"operators": "+,*"}), ("rg:spell_backward", {})],
)
def test_rg_tasks_pass_the_task_contract(rg_host, address, options):
    task = rg_host.task(address, **SMALL, **options)
    assert task.default_verifier in rg_host.names("verifier")
    check_task_contract(task)


def test_rg_score_passes_the_verifier_contract(rg_host):
    task = rg_host.task("rg:chain_sum", **SMALL, **ONE_DIGIT_SUMS)
    right = lambda ex: f"{ex.question.split(': ')[-1]} {ex.answer}. The answer is {ex.answer}."
    wrong = lambda ex: f"The answer is {int(ex.answer) + 1}."
    verifier = rg_host.get("verifier", "rg_score")()
    check_verifier_contract(verifier, task.examples("heldout", limit=3), right, wrong, task.stop_sequences("fewshot"))


def test_splits_are_disjoint_deterministic_and_held_out_stable(rg_host):
    task = rg_host.task("rg:chain_sum", train_size=120, heldout_size=40, **ONE_DIGIT_SUMS)
    splits = {name: questions(task, name) for name in ("heldout", "dev", "train")}
    exemplars = [ex.question for ex in task.exemplars()]
    assert [len(splits[s]) for s in ("heldout", "dev", "train")] == [40, 12, 120] and len(exemplars) == 3
    everything = [q for qs in splits.values() for q in qs] + exemplars
    assert len(set(everything)) == len(everything), "a question is in two splits (or twice in one)"
    assert questions(task, "fit") == splits["train"]  # dev is generated apart, not carved out of train

    again = rg_host.task("rg:chain_sum", train_size=120, heldout_size=40, **ONE_DIGIT_SUMS)
    assert {s: questions(again, s) for s in splits} == splits
    bigger = rg_host.task("rg:chain_sum", train_size=130, heldout_size=40, dev_size=20, **ONE_DIGIT_SUMS)
    assert questions(bigger, "heldout") == splits["heldout"]
    assert questions(rg_host.task("rg:chain_sum", seed=1, heldout_size=40, **ONE_DIGIT_SUMS), "heldout") != splits["heldout"]
    with pytest.raises(ConfigError, match="distinct questions"):  # two one-digit numbers make 200 questions
        rg_host.task("rg:chain_sum", train_size=200, heldout_size=40, **ONE_DIGIT_SUMS).examples("train")


def test_generator_options_are_typed_and_checked(rg_host):
    task = rg_host.task("rg:basic_arithmetic", operators="+,-", min_digits="2", max_digits=2, **SMALL)
    assert task.config.min_digits == 2 and task.generator_options["operators"] == ["+", "-"]
    assert all("*" not in q and "/" not in q for q in questions(task, "heldout"))
    with pytest.raises(ConfigError, match="min_digits"):
        rg_host.task("rg:chain_sum", min_digits="two")
    with pytest.raises(ConfigError, match="did you mean 'max_digits'"):
        rg_host.task("rg:chain_sum", max_digit=2)
    with pytest.raises(ConfigError, match="reasoning-gym refuses"):
        rg_host.task("rg:chain_sum", min_digits=3, max_digits=1)
    with pytest.raises(ConfigError, match=r"rg:<dataset>"):
        rg_host.task("rg")
    with pytest.raises(UnknownNameError):
        rg_host.task("rg:no_such_generator")


def test_exemplars_show_a_chain_of_sums_worked_out_and_otherwise_the_answer(rg_host):
    sums = rg_host.task("rg:chain_sum", min_terms=3, max_terms=3, **SMALL)
    ex = sums.exemplars()[0]
    a, op1, b, *_ = ex.raw["metadata"]["expression"].split()
    assert sums.exemplar_answer(ex).startswith(f"{a} {op1} {b} = ")
    assert sums.exemplar_answer(ex).endswith(f". The answer is {ex.answer}.") and sums.exemplar_answer(ex).count(" = ") == 2
    products = rg_host.task("rg:products", **SMALL)
    ex = products.exemplars()[0]
    assert products.exemplar_answer(ex) == f"The answer is {ex.answer}."
    prompt = products.prompt(products.examples("heldout")[0])
    assert prompt.count("Q: ") == 4 and prompt.endswith("\nA:")


def test_rg_score_verdicts_on_hand_made_answers(rg_host):
    task = rg_host.task("rg:chain_sum", **SMALL, **ONE_DIGIT_SUMS)
    ex = task.examples("heldout")[0]
    assert ex.answer_kind is AnswerKind.NUMBER
    gold = int(ex.answer)
    stop = task.stop_sequences("fewshot")
    completions = {
        f" 3 + 4 = 7, no: the answer is {gold}.": Status.CORRECT,
        f" The answer is {gold}.0.": Status.CORRECT,  # reasoning-gym would give "7.0" half credit: the number goes in canonical
        f" The answer is {gold + 1}.": Status.INCORRECT,
        f" So it is {gold}": Status.CORRECT,  # no cue: the last number
        " I cannot tell.": Status.UNPARSEABLE,
        f" The answer is {gold + 1}.\nQ: 1 + 1 =\nA: The answer is {gold}.": Status.INCORRECT,  # cut at the next question
    }
    verifier = rg_host.get("verifier", "rg_score")()
    verdicts = verifier.verify([Sample(ex, c, stop=stop) for c in completions])
    assert [v.status for v in verdicts] == list(completions.values())
    assert [v.score for v in verdicts] == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    assert verdicts[3].reason == "no answer cue; took the last number"
    strict = rg_host.get("verifier", "rg_score")(last_number=False)
    assert strict.verify([Sample(ex, f" So it is {gold}", stop=stop)])[0].status is Status.UNPARSEABLE

    words = rg_host.task("rg:spell_backward", **SMALL)
    word = words.examples("heldout")[0]
    near = verifier.verify([Sample(word, f"The answer is {word.answer}."), Sample(word, f"The answer is {word.answer[:-1]}.")])
    assert near[0].status is Status.CORRECT
    assert near[1].status is Status.INCORRECT and 0 < near[1].score < 1  # the generator's partial credit, kept


def test_its_lm_eval_definitions_are_current_and_cotkit_eval_finds_them(rg_host, tiny_model, tmp_path):
    from cotkit_reasoning_gym.generators import DATASETS

    from cotkit.lmeval import yamls

    folder = rg_host.get("task", "rg").lm_eval_yamls
    on_disk = {p.name: p.read_text() for p in Path(folder).glob("cotkit_*.yaml")}
    assert set(on_disk) == {f"cotkit_rg_{d}.yaml" for d in DATASETS}
    for spec in ("rg:chain_sum", "rg:spell_backward"):  # every file is rendered alike; two are re-rendered here
        name, text = yamls.render_task(rg_host, spec)
        assert on_disk[name] == text, f"{folder} is stale: run `python -m cotkit.lmeval.yamls {folder} rg`"

    env = {k: v for k, v in os.environ.items() if k != "COTKIT_DISABLE_PLUGIN_AUTOLOAD"} | {"OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "cotkit", "eval", "-t", "rg:chain_sum", "-O", "heldout_size=2", "-O", "train_size=4",
               "-m", str(tiny_model), "--limit", "2", "--max-new-tokens", "4", "-o", str(tmp_path / "eval"), "--json"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["task"] == "rg:chain_sum" and summary["n"] == 2
    rows = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    assert [r["answer"] for r in rows] == [ex.answer for ex in rg_host.task("rg:chain_sum", heldout_size=2, train_size=4).examples("heldout")]
