"""report.md and accuracy.png for a run, built from its recorded phases (any method).

Conventions a method follows to get a report: evaluation phases are named
`iter_NNN/eval_dev` (held-out accuracy after iteration NNN; iter_000 is the base model) and
`iter_NNN/eval_heldout` (the task's held-out split), with the summary of
`cotkit.harness.evaluate.evaluate` as result; an `iter_NNN/summary` phase holds the iteration's
funnel counts. `iter_NNN/eval_heldout_<variant>` phases (the same held-out examples decoded another
way, e.g. PaD's refinement pass) are listed under the plain one, labelled by their `decoding`
field; `iter_NNN/eval_dev_<variant>` phases (e.g. a majority vote over samples) are a column of
the dev table beside the plain accuracy, headed by their `decoding` field. An evaluation's
`rates` ({label: {count, n}}, e.g. Fine-tune-CoT's `contains answer` and `correct format`) are
columns of the held-out table, each with its 95% interval. Everything else in metrics.jsonl is
listed as it is.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cotkit.jsonl import atomic_write_text

#: Funnel columns shown when a summary row has them, in this order, with their headers.
FUNNEL_COLUMNS = (
    ("questions", "questions"),
    ("samples", "samples"),
    ("correct", "correct samples"),
    ("unparseable", "unparseable samples"),
    ("rationalized", "rationalized"),
    ("train_examples", "train ex."),
    ("train_tokens", "train tokens"),
    ("steps", "steps"),
    ("examples_trained", "examples trained"),
)


def iteration_rows(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per iteration: `dev` (eval summary), `heldout`, `summary` (funnel) where recorded,
    and `dev_variants` / `heldout_variants` ({variant: eval summary}) for `eval_dev_<variant>` /
    `eval_heldout_<variant>` phases."""
    by_iter: dict[int, dict[str, Any]] = {}
    for row in metrics:
        variant = re.fullmatch(r"iter_(\d+)/eval_(dev|heldout)_(\w+)", str(row.get("phase", "")))
        if variant:
            entry = by_iter.setdefault(int(variant.group(1)), {"iteration": int(variant.group(1))})
            entry.setdefault(f"{variant.group(2)}_variants", {})[variant.group(3)] = row
            continue
        m = re.fullmatch(r"iter_(\d+)/(eval_dev|eval_heldout|summary)", str(row.get("phase", "")))
        if not m:
            continue
        it = int(m.group(1))
        key = {"eval_dev": "dev", "eval_heldout": "heldout", "summary": "summary"}[m.group(2)]
        by_iter.setdefault(it, {"iteration": it})[key] = row
    return [by_iter[i] for i in sorted(by_iter)]


def accuracy_of(ev: dict[str, Any] | None) -> tuple[float, float, float, int] | None:
    """(accuracy, ci_low, ci_high, n) of an eval summary, over all of its n rows.

    Worked out from the summary's counts where it has them, so a summary recorded before error
    rows counted (its accuracy was over the rows without errors) reads by the same rule as a new one.
    """
    if not ev:
        return None
    n, correct = ev.get("n"), ev.get("correct")
    if isinstance(n, int) and isinstance(correct, int) and n > 0:
        from cotkit.stats import wilson_interval

        low, high = wilson_interval(correct, n)
        return correct / n, low, high, n
    if ev.get("accuracy") is None:
        return None
    acc = float(ev["accuracy"])
    return acc, float(ev.get("ci_low", acc)), float(ev.get("ci_high", acc)), int(ev.get("n") or 0)


def fmt_acc(ev: dict[str, Any] | None) -> str:
    """`41.0% [31.2, 51.6] (n=100)` from an eval summary: correct / n over all rows, errors included."""
    return fmt_accuracy(accuracy_dict(ev))


def accuracy_dict(ev: dict[str, Any] | None) -> dict[str, Any] | None:
    """`accuracy_of` as {accuracy, ci_low, ci_high, n} (what `cotkit show --json` and `cotkit compare --json` print)."""
    got = accuracy_of(ev)
    return None if got is None else dict(zip(("accuracy", "ci_low", "ci_high", "n"), got))


def fmt_accuracy(a: dict[str, Any] | None) -> str:
    """`41.0% [31.2, 51.6] (n=100)` from {accuracy, ci_low, ci_high, n} (`cotkit show --json`'s accuracies)."""
    if a is None:
        return "–"
    return f"{100 * a['accuracy']:.1f}% [{100 * a['ci_low']:.1f}, {100 * a['ci_high']:.1f}] (n={a['n']})"


def parsed_accuracy(ev: dict[str, Any] | None) -> float | None:
    """Accuracy among the answers the verifier read and judged: correct / (correct + incorrect)."""
    ev = ev or {}
    correct = ev.get("correct")
    if isinstance(correct, int) and isinstance(ev.get("incorrect"), int):
        judged = correct + ev["incorrect"]
        return correct / judged if judged else None
    if isinstance(correct, int) and all(isinstance(ev.get(k), int) for k in ("n", "unparseable_count", "timeouts", "errors")):
        judged = ev["n"] - ev["unparseable_count"] - ev["timeouts"] - ev["errors"]
        return correct / judged if judged > 0 else None
    return ev.get("accuracy_parsed")


#: The verdicts that are not an answer judged right or wrong, shown as counts beside every accuracy.
VERDICT_COUNT_COLUMNS = (("unparseable_count", "unparseable"), ("timeouts", "timeouts"), ("errors", "errors"))


def _count(ev: dict[str, Any] | None, key: str) -> str:
    v = (ev or {}).get(key)
    return "–" if v is None else str(v)


def _verdict_cells(ev: dict[str, Any] | None) -> list[str]:
    """Accuracy of parsed answers, then the unparseable, timeout and error counts."""
    acc = parsed_accuracy(ev)
    return ["–" if acc is None else f"{100 * acc:.1f}%", *[_count(ev, k) for k, _ in VERDICT_COUNT_COLUMNS]]


def iteration_table(rows: list[dict[str, Any]], title: str = "iterations") -> Any:
    """A rich table of iterations: dev accuracy with its CI and the funnel."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("iter", justify="right")
    table.add_column("dev accuracy [95% CI]", justify="right")
    for header in ("dev accuracy of parsed answers", *[f"dev {h}" for _, h in VERDICT_COUNT_COLUMNS]):
        table.add_column(header, justify="right")
    present = [(k, h) for k, h in FUNNEL_COLUMNS if any(k in (r.get("summary") or {}) for r in rows)]
    for _, header in present:
        table.add_column(header, justify="right")
    for r in rows:
        s = r.get("summary") or {}
        table.add_row(str(r["iteration"]), fmt_acc(r.get("dev")), *_verdict_cells(r.get("dev")), *[_cell(s.get(k)) for k, _ in present])
    return table


def _rate(rate: dict[str, Any] | None) -> str:
    """`62.0% [52.2, 70.9] (n=100)` of a method's own rate ({count, n}), e.g. Fine-tune-CoT's `contains answer`."""
    if not rate or not rate.get("n"):
        return "–"
    from cotkit.stats import wilson_interval

    low, high = wilson_interval(rate["count"], rate["n"])
    return f"{100 * rate['count'] / rate['n']:.1f}% [{100 * low:.1f}, {100 * high:.1f}] (n={rate['n']})"


def _top(ev: dict[str, Any] | None) -> str:
    ev = ev or {}
    if ev.get("top_answer") is None:
        return "–"
    if isinstance(ev.get("top_answer_count"), int) and ev.get("n"):
        return f"{ev['top_answer']} ({100 * ev['top_answer_count'] / ev['n']:.0f}% of all rows)"
    return f"{ev['top_answer']} ({100 * ev.get('top_answer_share', 0):.0f}% of parsed)"  # recorded before counts were


def _cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def write_report(run_dir: str | Path, config: dict[str, Any], metrics: list[dict[str, Any]], title: str | None = None) -> Path:
    """Write report.md and accuracy.png into the run directory; return the report's path."""
    run_dir = Path(run_dir)
    rows = iteration_rows(metrics)
    method = config.get("method", "?")
    lines = [f"# {title or method} run: {config.get('task')} on {config.get('model')}", ""]
    lines += [
        f"- method: `{method}`, seed {config.get('seed')}",
        f"- options: `{_options_line(config.get(method) or {})}`",
        "",
    ]
    if any("dev" in r for r in rows):
        lines += [
            "## Held-out (dev) accuracy per iteration",
            "",
            "Iteration 0 is the base model. Accuracy is correct / n over all rows: unparseable, timeout and error rows count as not correct.",
            "",
        ]
        present = [(k, h) for k, h in FUNNEL_COLUMNS if any(k in (r.get("summary") or {}) for r in rows)]
        variants = {v: ev.get("decoding") or v for r in rows for v, ev in (r.get("dev_variants") or {}).items()}
        header = [
            "iteration", "dev accuracy [95% CI]", *[f"dev {label} [95% CI]" for label in variants.values()],
            "dev accuracy of parsed answers", *[f"dev {h}" for _, h in VERDICT_COUNT_COLUMNS], "most common answer",
            *[h for _, h in present],
        ]  # fmt: skip
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for r in rows:
            s = r.get("summary") or {}
            lines.append(
                "| "
                + " | ".join(
                    [
                        str(r["iteration"]), fmt_acc(r.get("dev")), *[fmt_acc((r.get("dev_variants") or {}).get(v)) for v in variants],
                        *_verdict_cells(r.get("dev")), _top(r.get("dev")), *[_cell(s.get(k)) for k, _ in present],
                    ]
                )
                + " |"
            )
        lines.append("")
        lines.append("![held-out accuracy per iteration](accuracy.png)")
        lines.append("")
    held = [r for r in rows if "heldout" in r]
    if held:
        lines += ["## Final evaluation on the task's held-out split", ""]
        evals = [ev for r in held for ev in (r["heldout"], *(r.get("heldout_variants") or {}).values())]
        rates = list(dict.fromkeys(label for ev in evals for label in ev.get("rates") or {}))  # a method's own rates
        lines += [
            "Accuracy is correct / n over all rows: unparseable, timeout and error rows count as not correct.",
            "",
            "| model | split | accuracy [95% CI] | accuracy of parsed answers | unparseable | timeouts | errors | most common answer |"
            + "".join(f" {label} [95% CI] |" for label in rates),
            "|---|---|---|---|---|---|---|---|" + "---|" * len(rates),
        ]

        def row(who: str, ev: dict[str, Any]) -> str:
            cells = "".join(f" {_rate((ev.get('rates') or {}).get(label))} |" for label in rates)
            return f"| {who} | {ev.get('split', '?')} | {fmt_acc(ev)} | {' | '.join(_verdict_cells(ev))} | {_top(ev)} |{cells}"

        for r in held:
            who = "base model" if r["iteration"] == 0 else f"after iteration {r['iteration']}"
            lines.append(row(who, r["heldout"]))
            for variant, ev in (r.get("heldout_variants") or {}).items():
                lines.append(row(f"{who}, {ev.get('decoding') or variant}", ev))
        a, b = accuracy_of(held[0]["heldout"]), accuracy_of(held[-1]["heldout"])
        if len(held) >= 2 and a is not None and b is not None:
            delta = 100 * (b[0] - a[0])
            overlap = not (b[1] > a[2] or a[1] > b[2])
            lines.append("")
            lines.append(
                f"Change: {delta:+.1f} points"
                + (" (the 95% intervals overlap: not a significant difference at this n)." if overlap else " (the 95% intervals do not overlap).")
            )
        lines.append("")
    timing = [m for m in metrics if m.get("seconds") is not None]
    if timing:
        total = sum(float(m["seconds"]) for m in timing)
        lines += ["## Phases", "", f"{len(timing)} phases, {total / 60:.1f} minutes of compute in total.", ""]
        lines.append("| phase | seconds |")
        lines.append("|---|---|")
        for m in timing:
            lines.append(f"| {m['phase']} | {float(m['seconds']):.1f} |")
        lines.append("")
    plot_accuracy(rows, run_dir / "accuracy.png", title=f"{method}: {config.get('task')}")
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def _options_line(opts: dict[str, Any], prefix: str = "") -> str:
    parts = []
    for k, v in opts.items():
        if isinstance(v, dict):
            parts.append(_options_line(v, f"{prefix}{k}."))
        else:
            parts.append(f"{prefix}{k}={v}")
    return " ".join(p for p in parts if p)


def plot_accuracy(rows: list[dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """Dev accuracy per iteration with 95% CIs (and held-out points), saved as a PNG."""
    dev = [r for r in rows if "dev" in r]
    held = [r for r in rows if "heldout" in r]
    if not dev and not held:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for series, label, marker in ((dev, "dev (held out from train)", "o"), (held, "held-out split", "s")):
        if not series:
            continue
        key = "dev" if series is dev else "heldout"
        series = [r for r in series if accuracy_of(r[key]) is not None]
        # held-out points (base and final only) are not joined, and nudged right so bars do not overlap
        got = [accuracy_of(r[key]) for r in series]  # over all rows, as in the report's tables
        xs = [r["iteration"] + (0.06 if key == "heldout" else 0.0) for r in series]
        ys = [100 * acc for acc, _, _, _ in got]  # type: ignore[misc]
        lo = [100 * (acc - low) for acc, low, _, _ in got]  # type: ignore[misc]
        hi = [100 * (high - acc) for acc, _, high, _ in got]  # type: ignore[misc]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker=marker, capsize=4, label=label, linestyle="-" if key == "dev" else "none")
    ax.set_xlabel("iteration (0 = base model)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.set_xticks(sorted({r["iteration"] for r in rows}))
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    # No software/date metadata, so the same run always gives the same bytes.
    fig.savefig(tmp, metadata={"Software": None})
    plt.close(fig)
    tmp.replace(path)
    return path
