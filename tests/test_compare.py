"""`cotkit compare`: runs made by quick tiny-model runs, read back side by side; McNemar's test against known values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cotkit.stats import mcnemar_p


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("b", "c", "p", "test"),
    [
        (0, 0, 1.0, "exact binomial"),
        (0, 5, 0.0625, "exact binomial"),  # 2 * (1/2)^5
        (5, 1, 0.21875, "exact binomial"),  # 2 * (1 + 6) / 2^6
        (3, 3, 1.0, "exact binomial"),  # the doubled tail passes 1
        (0, 24, 2 * 0.5**24, "exact binomial"),
        # statsmodels' mcnemar([[101, 121], [59, 33]]): chi2 = 20.672, p = 5.450e-06
        (121, 59, 5.450094825427117e-06, "chi-squared, continuity-corrected"),
        (20, 20, 1.0, "chi-squared, continuity-corrected"),
    ],
)
def test_mcnemar_p_known_values(b, c, p, test):
    got, form = mcnemar_p(b, c)
    assert got == pytest.approx(p, rel=1e-6) and form == test
    assert mcnemar_p(c, b)[0] == pytest.approx(got)  # symmetric in the two models


def test_budget_counts_what_backends_return_and_what_a_teacher_cache_serves(tmp_path):
    """A backend's generations count once; served again from the cache they count again (a resumed run counts what an uninterrupted one does)."""
    from cotkit.budget import counting_sampled_tokens, totals
    from cotkit.contracts import Generation, SamplingParams
    from cotkit.harness.sample import accepts_seeds
    from cotkit.harness.teacher_cache import CachedTeacher, TeacherCache

    class Echo:
        name, model_name = "echo", "echo"

        def generate(self, prompts, params, progress=True, seeds=None):
            return [[Generation(p, n_tokens=len(p)) for _ in range(params.n)] for p in prompts]

        def close(self):
            pass

    backend = counting_sampled_tokens(Echo())
    assert accepts_seeds(backend)  # the wrapper keeps the signature `sample()` inspects
    params = SamplingParams(n=2, temperature=1.0)
    before = totals()["sampled_tokens"]
    backend.generate(["abc", "de"], params, seeds=[1, 2])
    assert totals()["sampled_tokens"] - before == 2 * (3 + 2)

    cache = tmp_path / "teacher.jsonl"
    for _ in range(2):  # asked of the backend, then served from the cache file
        before = totals()["sampled_tokens"]
        teacher = CachedTeacher(lambda: counting_sampled_tokens(Echo()), {"backend": "echo"}, TeacherCache(cache))
        teacher.generate(["abcd"], params, seeds=[0])
        assert totals()["sampled_tokens"] - before == 2 * 4
    assert teacher.hits == 2 and teacher.requests == 0


# ----------------------------------------------------------------------------- real runs


def run_cli(*args: object) -> int:
    """`cotkit ARGS...` in this process (a subprocess per run costs a torch import each)."""
    from cotkit import plugins
    from cotkit.cli import state
    from cotkit.cli.main import main

    plugins.reset()
    state.options = state.GlobalOptions()
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 0
    finally:
        plugins.reset()
    return 0


def sft_args(model: Path, out: Path, task: str, heldout: int = 6, steps: int = 2) -> list[object]:
    return [
        "train", "--method", "sft", "--task", task, "--target", "answer", "--model", model, "--output-dir", out,
        "--train-limit", "6", "--dev-limit", "2", "--heldout-limit", heldout, "--max-new-tokens", "12",
        "--max-steps", steps, "--sft.batch-size", "2", "--sft.grad-accum", "1", "--sft.learning-rate", "3e-3",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def runs(data_dir, tiny_model, formatted_model, star_args, star_task, tmp_path_factory):
    """STaR and sft on one task and held-out set, sft with fewer held-out questions, and sft on another task."""
    import torch

    from cotkit import plugins

    tmp = tmp_path_factory.mktemp("compare")
    made = {name: tmp / name for name in ("star", "sft", "sft_fewer", "gsm8k")}
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as m:
        m.setenv(plugins.AUTOLOAD_OFF_ENV, "1")
        try:
            plans = {
                "star": [*star_args(formatted_model, made["star"]), "--iterations", "1"],
                "sft": sft_args(formatted_model, made["sft"], star_task),
                "sft_fewer": sft_args(formatted_model, made["sft_fewer"], star_task, heldout=4, steps=1),
                "gsm8k": sft_args(tiny_model, made["gsm8k"], "gsm8k", steps=1),
            }
            for name, args in plans.items():
                assert run_cli("--data-dir", data_dir, *args) == 0, name
        finally:
            torch.set_num_threads(before)
    return made


@pytest.fixture
def compared(cli, runs, tmp_path):
    """`cotkit compare --json` of the STaR and sft runs, and where its plot went."""
    plot = tmp_path / "plots" / "cmp.png"
    r = cli("compare", runs["star"], runs["sft"], "--plot", plot, "--json")
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout), plot


def test_json_has_one_row_per_run_with_accuracy_change_collapse_and_budget(compared, runs, star_task):
    out, plot = compared
    assert (out["task"], out["split"], out["n"], out["plot"]) == (star_task, "heldout", 6, str(plot))
    assert [r["method"] for r in out["runs"]] == ["star", "sft"]
    for run, path in zip(out["runs"], (runs["star"], runs["sft"])):
        phases = json.loads((path / "state.json").read_text())["phases"]
        final = phases["iter_001/eval_heldout"]["result"]
        assert run["final"]["accuracy"] == final["correct"] / final["n"] and run["final"]["n"] == 6
        assert run["base"]["accuracy"] == phases["iter_000/eval_heldout"]["result"]["correct"] / 6
        assert run["unparseable"] == {"count": final["unparseable_count"], "n": 6}
        assert run["top_answer"] == {"answer": final["top_answer"], "count": final["top_answer_count"], "n": 6}
        training = json.loads((path / "iter_001" / "checkpoint" / "training.json").read_text())
        assert run["budget"]["trained_tokens"] == training["tokens_trained"] > 0
        assert run["budget"]["seconds"] == pytest.approx(sum(p["seconds"] for p in phases.values()), abs=0.1)
    star, sft = out["runs"]
    # STaR samples every fit question and rationalizes the failures: the tokens its rows record
    sampled = rows(runs["star"] / "iter_001" / "samples.jsonl") + rows(runs["star"] / "iter_001" / "rationalized.jsonl")
    assert star["budget"]["sampled_tokens"] == sum(s["meta"]["n_tokens"] for s in sampled) > 0
    assert sft["budget"]["sampled_tokens"] == 0  # sft trains on the datasets' own targets
    evals = [rows(runs["sft"] / f"iter_00{i}" / f"eval_{s}.jsonl") for i in (0, 1) for s in ("dev", "heldout")]
    assert sft["budget"]["eval_sampled_tokens"] == sum(r["meta"]["n_tokens"] for rs in evals for r in rs)


def test_change_is_mcnemar_on_the_paired_held_out_verdicts(compared, runs):
    out, _ = compared
    for run, path in zip(out["runs"], (runs["star"], runs["sft"])):
        base = {r["meta"]["id"]: r["correct"] for r in rows(path / "iter_000" / "eval_heldout.jsonl")}
        final = {r["meta"]["id"]: r["correct"] for r in rows(path / "iter_001" / "eval_heldout.jsonl")}
        assert base.keys() == final.keys() and len(base) == 6
        gained = sum(final[k] and not base[k] for k in base)
        lost = sum(base[k] and not final[k] for k in base)
        p, test = mcnemar_p(gained, lost)
        assert run["change"] == {
            "n": 6, "gained": gained, "lost": lost, "points": round(100 * (gained - lost) / 6, 2), "p_value": float(f"{p:.3g}"), "test": test,
        }  # fmt: skip
        assert run["change"]["points"] == pytest.approx(100 * (run["final"]["accuracy"] - run["base"]["accuracy"]), abs=0.01)


def test_table_shows_each_run_and_the_plot_is_written(cli, runs, tmp_path):
    plot = tmp_path / "cmp.png"
    r = cli("compare", runs["star"], runs["sft"], "--plot", plot)
    assert r.exit_code == 0, r.stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = json.loads(cli("compare", runs["star"], runs["sft"], "--plot", plot, "--json").stdout)
    from cotkit.run.report import fmt_accuracy

    lines = r.stdout.splitlines()
    for run in out["runs"]:
        line = next(ln for ln in lines if ln.startswith("│ " + run["method"]))
        assert fmt_accuracy(run["base"]) in line and fmt_accuracy(run["final"]) in line
        assert f"{run['change']['points']:+.1f}" in line and f"(+{run['change']['gained']}/−{run['change']['lost']})" in line
        assert f"{run['budget']['trained_tokens']:,}" in line
    assert "McNemar" in r.stdout and f"plot: {plot}" in r.stdout


def test_default_plot_goes_to_compare_png_in_the_working_directory(cli, runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("compare", runs["star"], runs["sft"]).exit_code == 0
    assert (tmp_path / "compare.png").stat().st_size > 0


def test_runs_on_another_task_or_other_questions_are_refused_in_one_line(cli, runs, tmp_path):
    r = cli("compare", runs["star"], runs["gsm8k"], "--plot", tmp_path / "x.png")
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "ran on gsm8k" in r.stderr and "compare runs of one task" in r.stderr
    r = cli("compare", runs["sft"], runs["sft_fewer"], "--plot", tmp_path / "x.png")
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "other held-out questions" in r.stderr and "(4 vs 6, 4 in common)" in r.stderr
    assert not (tmp_path / "x.png").exists()


def test_a_folder_that_is_not_a_run_is_refused(cli, runs, tmp_path):
    r = cli("compare", runs["star"], tmp_path, "--plot", tmp_path / "x.png")
    assert r.exit_code == 2 and "not a cotkit run directory" in r.stderr


def test_against_tests_each_final_model_against_the_reference_final_on_the_same_questions(cli, runs, tmp_path):
    # the reference need not be among the listed runs: it is added first
    r = cli("compare", runs["sft"], "--against", runs["star"], "--plot", tmp_path / "p.png", "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["against"] == str(runs["star"]) and [x["method"] for x in out["runs"]] == ["star", "sft"]
    star = {x["meta"]["id"]: x["correct"] for x in rows(runs["star"] / "iter_001" / "eval_heldout.jsonl")}
    sft = {x["meta"]["id"]: x["correct"] for x in rows(runs["sft"] / "iter_001" / "eval_heldout.jsonl")}
    gained = sum(sft[k] and not star[k] for k in star)
    lost = sum(star[k] and not sft[k] for k in star)
    p, test = mcnemar_p(gained, lost)
    assert out["runs"][0]["against"] is None
    assert out["runs"][1]["against"] == {
        "n": 6, "gained": gained, "lost": lost, "points": round(100 * (gained - lost) / 6, 2), "p_value": float(f"{p:.3g}"), "test": test,
    }  # fmt: skip
    assert out["runs"][1]["against"]["points"] == pytest.approx(100 * (out["runs"][1]["final"]["accuracy"] - out["runs"][0]["final"]["accuracy"]), abs=0.01)
    table = cli("compare", runs["star"], runs["sft"], "--against", runs["star"], "--plot", tmp_path / "p.png")
    assert table.exit_code == 0 and "final vs star" in table.stdout
