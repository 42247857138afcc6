"""Runs side by side on the same held-out questions (`cotkit compare`): accuracy, paired change, collapse, budget.

Each run is read back from its directory, whatever its method: the held-out evaluations are the
`iter_NNN/eval_heldout` phases (`cotkit.run.report`), iteration 0 the base model and the last one
the final model, with their per-question verdicts in `iter_NNN/eval_heldout.jsonl`; the budget is
what `cotkit.budget` recorded per phase in state.json. Runs are comparable only on the same task
and the same held-out questions, which is checked by question id, not by name.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

from cotkit.errors import ConfigError

#: A phase that evaluates a model; its sampled tokens are the evaluation's, not the method's budget.
EVAL_PHASE = re.compile(r"(^|/)eval_")


def question_key(row: dict[str, Any]) -> str:
    """The held-out question a verdict row answers: the id evaluations record in `meta.id`.

    Rows of a method's own evaluation may carry it as `id`; rows written before evaluations
    recorded ids are keyed by the publisher's fields, which `sample_row` writes between `task` and
    `completion` (the same question gives the same fields in every run).
    """
    meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
    if meta.get("id") is not None:
        return str(meta["id"])
    if row.get("id") is not None:
        return str(row["id"])
    keys = list(row)
    start = keys.index("task") + 1 if "task" in keys else 0
    end = keys.index("completion") if "completion" in keys else len(keys)
    return json.dumps({k: row[k] for k in keys[start:end]}, sort_keys=True, ensure_ascii=False)


def read_verdicts(path: Path) -> dict[str, bool] | None:
    """Question key -> correct, from an evaluation's rows (None when the file is missing).

    With several samples per question the one that carried its majority vote decides, else the first.
    """
    if not path.exists():
        return None
    from cotkit.jsonl import read_jsonl

    verdicts: dict[str, bool] = {}
    for row in read_jsonl(path):
        key = question_key(row)
        voted = bool((row.get("meta") or {}).get("majority_vote"))
        if key not in verdicts or voted:
            verdicts[key] = bool(row.get("correct"))
    return verdicts


def _budget(phases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Tokens sampled by the method (evaluations apart), tokens trained and seconds, over the recorded phases.

    A token count is None when some phase has none (a run recorded before they were counted).
    """

    def total(key: str, names: list[str]) -> int | None:
        if any(key not in phases[p] for p in names):
            return None
        return sum(int(phases[p][key]) for p in names)

    method = [p for p in phases if not EVAL_PHASE.search(p)]
    evals = [p for p in phases if EVAL_PHASE.search(p)]
    return {
        "sampled_tokens": total("sampled_tokens", method),
        "eval_sampled_tokens": total("sampled_tokens", evals),
        "trained_tokens": total("trained_tokens", list(phases)),
        "seconds": round(sum(float(rec.get("seconds") or 0) for rec in phases.values()), 1),
    }


def _paired_change(base: dict[str, bool], final: dict[str, bool]) -> dict[str, Any]:
    """Final minus base on the questions both answered, with McNemar's test on the discordant pairs."""
    from cotkit.stats import mcnemar_p

    shared = [k for k in final if k in base]
    gained = sum(1 for k in shared if final[k] and not base[k])
    lost = sum(1 for k in shared if base[k] and not final[k])
    p, test = mcnemar_p(gained, lost)
    return {
        "n": len(shared), "gained": gained, "lost": lost,
        "points": round(100 * (gained - lost) / len(shared), 2) if shared else None,
        "p_value": float(f"{p:.3g}"), "test": test,  # significant digits: a strong effect's p is far below 1e-6
    }  # fmt: skip


def summarize_run(path: Path) -> dict[str, Any]:
    """One run as `cotkit compare` shows it; refuses a run without a held-out evaluation of a trained model."""
    from cotkit.run.context import RunContext
    from cotkit.run.directory import load_run
    from cotkit.run.report import accuracy_dict, iteration_rows

    config, state = load_run(path)
    held = [r for r in iteration_rows(RunContext(config, path).metrics_rows()) if "heldout" in r]
    finals = [r for r in held if r["iteration"] > 0]
    if not finals:
        raise ConfigError(
            f"cotkit compare: {path} has no held-out evaluation of a trained model (no iter_NNN/eval_heldout "
            "after iteration 0): let the run finish, or run it without --no-final-eval"
        )
    final_row = finals[-1]
    base_row = held[0] if held[0]["iteration"] == 0 else None
    final_ev = final_row["heldout"]
    final_verdicts = read_verdicts(path / f"iter_{final_row['iteration']:03d}" / "eval_heldout.jsonl")
    base_verdicts = read_verdicts(path / "iter_000" / "eval_heldout.jsonl") if base_row else None
    n = int(final_ev.get("n") or 0)
    top_count = final_ev.get("top_answer_count")
    return {
        "path": str(path),
        "method": config.run.method,
        "task": config.run.task,
        "task_options": dict(config.run.task_options),
        "model": config.run.model,
        "status": state.status,
        "split": final_ev.get("split"),
        "final_iteration": final_row["iteration"],
        "base": accuracy_dict(base_row["heldout"]) if base_row else None,
        "final": accuracy_dict(final_ev),
        "change": _paired_change(base_verdicts, final_verdicts) if base_verdicts and final_verdicts else None,
        "unparseable": {"count": final_ev.get("unparseable_count"), "n": n},
        "top_answer": {"answer": final_ev.get("top_answer"), "count": top_count, "n": n},
        "budget": _budget(state.phases),
        "final_verdicts": final_verdicts,
    }


def check_comparable(runs: list[dict[str, Any]]) -> None:
    """Refuse runs on different tasks (or task options) or on different held-out questions."""
    first = runs[0]
    for run in runs[1:]:
        if (run["task"], run["task_options"]) != (first["task"], first["task_options"]):
            raise ConfigError(
                f"cotkit compare: {run['path']} ran on {_task_label(run)} but {first['path']} on {_task_label(first)}: "
                "compare runs of one task"
            )
        questions, first_questions = run["final_verdicts"], first["final_verdicts"]
        if questions is None or first_questions is None:
            missing = run["path"] if questions is None else first["path"]
            raise ConfigError(f"cotkit compare: {missing} has no held-out verdicts file (eval_heldout.jsonl) to pair questions by")
        if questions.keys() != first_questions.keys():
            common = len(questions.keys() & first_questions.keys())
            raise ConfigError(
                f"cotkit compare: {run['path']} was evaluated on other held-out questions than {first['path']} "
                f"({len(questions)} vs {len(first_questions)}, {common} in common): use the same "
                "--split-seed, --heldout-limit and task options"
            )


def _task_label(run: dict[str, Any]) -> str:
    opts = " ".join(f"{k}={v}" for k, v in sorted(run["task_options"].items()))
    return run["task"] + (f" ({opts})" if opts else "")


def compare_runs(paths: list[Path], against: Path | None = None) -> dict[str, Any]:
    """Every run summarised, checked comparable: {"task", "split", "n", "against", "runs": [...]} (the `--json` shape).

    With `against` (one of the runs, added first if not among `paths`), every other run's final model
    is also tested against that run's final model on the same questions ("against" of each run).
    """
    target = Path(against).resolve() if against is not None else None
    if target is not None and all(Path(p).resolve() != target for p in paths):
        paths = [against, *paths]
    runs = [summarize_run(p) for p in paths]
    check_comparable(runs)
    reference = None
    if target is not None:
        reference = next(r for r in runs if Path(r["path"]).resolve() == target)
        for run in runs:
            pair = reference["final_verdicts"], run["final_verdicts"]
            run["against"] = None if run is reference or None in pair else _paired_change(*pair)
    for run in runs:
        run.pop("final_verdicts")
    return {
        "task": _task_label(runs[0]), "split": runs[0]["split"], "n": runs[0]["final"]["n"],
        "against": reference["path"] if reference else None, "runs": runs,
    }  # fmt: skip


# ------------------------------------------------------------------------------- table and plot


def run_labels(runs: list[dict[str, Any]]) -> list[str]:
    """Each run's method, with its directory name where several runs share a method."""
    methods = [r["method"] for r in runs]
    return [r["method"] if methods.count(r["method"]) == 1 else f"{r['method']} ({Path(r['path']).name})" for r in runs]


def _share(part: Any, n: int) -> str:
    return "–" if not isinstance(part, int) or not n else f"{100 * part / n:.1f}%"


def _tokens(v: int | None) -> str:
    return "–" if v is None else f"{v:,}"


def _change(change: dict[str, Any] | None) -> list[str]:
    if change is None or change["points"] is None:
        return ["–", "–"]
    return [f"{change['points']:+.1f}", f"{change['p_value']:.3g} (+{change['gained']}/−{change['lost']})"]


def comparison_table(comparison: dict[str, Any]) -> Any:
    """The rich table of `cotkit compare`: one row per run."""
    from rich.markup import escape
    from rich.table import Table

    from cotkit.run.report import fmt_accuracy

    table = Table(title=f"{escape(comparison['task'])}, held-out split {comparison['split']} (n={comparison['n']})", title_justify="left")
    table.add_column("run", overflow="fold")
    for col in ("base [95% CI]", "final [95% CI]", "change (points)", "McNemar p (+won/−lost)"):
        table.add_column(col, no_wrap=True, justify="right")
    labels = run_labels(comparison["runs"])
    against = comparison.get("against")
    if against:
        reference = labels[[r["path"] for r in comparison["runs"]].index(against)]
        table.add_column(f"final vs {escape(reference)}: points, McNemar p (+won/−lost)", justify="right")
    for col in ("unparseable", "most common answer", "sampled tokens", "trained tokens", "seconds"):
        table.add_column(col, justify="right")
    for label, run in zip(labels, comparison["runs"]):
        top, budget = run["top_answer"], run["budget"]
        top_cell = "–" if top["answer"] is None else f"{escape(str(top['answer']))} ({_share(top['count'], top['n'])})"
        vs = [" ".join(_change(run["against"])) if run["against"] else "–"] if against else []
        table.add_row(
            escape(label), fmt_accuracy(run["base"]), fmt_accuracy(run["final"]), *_change(run["change"]), *vs,
            _share(run["unparseable"]["count"], run["unparseable"]["n"]), top_cell,
            _tokens(budget["sampled_tokens"]), _tokens(budget["trained_tokens"]), f"{budget['seconds']:.0f}",
        )  # fmt: skip
    return table


#: What the table's columns mean, printed under it.
TABLE_NOTE = (
    "Accuracy is correct / n over all held-out questions, with its 95% Wilson interval. The change is the final "
    "model's over the run's own base model on the same questions; McNemar's test counts the questions it won and "
    "lost (exact binomial below 25 of them). Unparseable and most common answer: the final model's, over all n. "
    "Sampled tokens leave out the evaluations; seconds add up the phases."
)


def plot_comparison(comparison: dict[str, Any], path: Path) -> Path:
    """Base and final held-out accuracy of each run with their 95% intervals, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = comparison["runs"]
    labels = run_labels(runs)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(runs) + 2), 4.5), dpi=100)
    for offset, key, marker, label in ((-0.12, "base", "o", "base model"), (0.12, "final", "s", "after training")):
        points = [(i + offset, r[key]) for i, r in enumerate(runs) if r[key] is not None]
        if not points:
            continue
        xs = [x for x, _ in points]
        ys = [100 * a["accuracy"] for _, a in points]
        err = [[100 * (a["accuracy"] - a["ci_low"]) for _, a in points], [100 * (a["ci_high"] - a["accuracy"]) for _, a in points]]
        ax.errorbar(xs, ys, yerr=err, marker=marker, linestyle="none", capsize=4, label=label)
    for i, r in enumerate(runs):
        if r["change"] is not None:
            top = max(a["ci_high"] for a in (r["base"], r["final"]) if a is not None)
            ax.annotate(f"p={r['change']['p_value']:.2g}", (i, 100 * top), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.set_xticks(range(len(runs)))
    ax.set_xticklabels(labels, rotation=20, ha="right")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_ylim(0, 120)  # room above 100% for the legend
    ax.set_yticks(range(0, 101, 20))
    task = textwrap.fill(comparison["task"], width=int(10 * fig.get_figwidth()))  # task options can be long
    ax.set_title(f"{task}\nheld-out accuracy (n={comparison['n']}, 95% CI; p: McNemar)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", ncol=2, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, metadata={"Software": None})  # no software/date metadata: the same runs give the same bytes
    plt.close(fig)
    tmp.replace(path)
    return path
