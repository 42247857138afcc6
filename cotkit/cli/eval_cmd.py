"""`cotkit eval`: evaluate a model on a task through lm-eval, scored by cotkit's verifier."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cotkit.cli import options, state
from cotkit.lmeval.runner import EvalSettings
from cotkit.models import DEFAULT_MODEL
from cotkit.options import parse_key_values


@options.with_settings_options(EvalSettings, not_options=("data_dir", "task_options", "scorer_options", "bootstrap_iters"))
def eval_command(
    task: options.Task,
    model: options.Model = DEFAULT_MODEL,
    backend: options.Backend = None,
    no_thoughts: options.NoThoughts = False,
    batch_size: options.BatchSize = None,
    backend_option: options.BackendOptions = None,
    task_option: options.TaskOptions = None,
    scorer_option: options.ScorerOptions = None,
    output_dir: Annotated[
        Optional[Path], typer.Option("--output-dir", "-o", help="Where results.json and samples.jsonl go.")
    ] = None,
    lm_eval_task: Annotated[
        Optional[str], typer.Option("--lm-eval-task", help="Also run this lm-eval built-in task on the same model and compare scorings.")
    ] = None,
    json_output: options.Json = False,
    report_to: Annotated[
        Optional[list[str]],
        typer.Option(
            "--report-to",
            help="Log the settings and summary to an experiment tracker (repeatable or comma-separated): "
            "tensorboard, wandb, mlflow, trackio, none. TensorBoard's logs go to OUTPUT_DIR/trackers.",
        ),
    ] = None,
    **settings: Any,  # every EvalSettings field that is an option: --style, --n, --beam-width, ...
) -> None:
    """Evaluate through lm-eval: accuracy with standard error, unparseable rate, n; per-sample JSONL."""
    from cotkit.cli.common import make_task
    from cotkit.contracts import check_styles
    from cotkit.errors import ConfigError

    check_styles(settings["style"])
    if settings["vote"] not in (None, "majority"):
        raise ConfigError(f"--vote {settings['vote']!r}: only 'majority' is supported")
    _check_sampling_values(settings, batch_size)
    task_obj = make_task(task, task_option)
    scorer_options = _check_step_scorers([s for s in (settings["rerank"], settings["step_scorer"]) if s], scorer_option)
    from cotkit.run.tracking import check_installed, wanted

    trackers = wanted([name.strip() for item in report_to or [] for name in item.split(",") if name.strip()])
    check_installed(trackers)
    from cotkit.lmeval.runner import evaluate
    from cotkit.models import load_backend

    if output_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        output_dir = Path("runs") / "eval" / f"{task_obj.full_name.replace(':', '_')}-{Path(model).name}-{stamp}"
    from cotkit.outputs import check_output_dir

    check_output_dir(output_dir, "--output-dir")  # before the model loads: a bad folder must not cost the evaluation
    eval_settings = EvalSettings(
        **settings, data_dir=str(task_obj.data_dir) if task_obj.data_dir else None,
        task_options=dict(task_obj.task_options), scorer_options=scorer_options,
    )  # fmt: skip
    backend_options = parse_key_values(backend_option, "--backend-option")
    if batch_size:
        backend_options["batch_size"] = batch_size
    from cotkit.cli.common import choose_backend

    backend = choose_backend(backend, model, backend_options, no_thoughts)
    be = load_backend(backend, model=model, **backend_options)
    try:
        verbose = state.options.verbose
        summary = evaluate(task_obj, be, eval_settings, output_dir, verbose=verbose)
        if lm_eval_task:
            from cotkit.lmeval.parity import compare

            summary["parity"] = compare(lm_eval_task, task_obj, be, eval_settings, output_dir, verbose=verbose)
    finally:
        be.close()
    summary["output_dir"] = str(output_dir)
    if trackers:
        from dataclasses import asdict

        from cotkit.run.tracking import log_evaluation

        # backend options are left out: an API endpoint's options are no hyperparameters to publish
        log_evaluation(trackers, output_dir, summary, {"task": task_obj.full_name, "model": model, "backend": backend, **asdict(eval_settings)})
    _report(summary, json_output)


def _check_sampling_values(settings: dict[str, Any], batch_size: Optional[int]) -> None:
    """One-line errors naming the option, before any data or model loads."""
    from cotkit.option_checks import at_least_one, check_values
    from cotkit.option_checks import temperature as temperature_rule
    from cotkit.option_checks import top_p as top_p_rule

    s = settings
    check_values(
        ("--n", s["n"], at_least_one), ("--limit", s["limit"], at_least_one),
        ("--temperature", s["temperature"], temperature_rule), ("--top-p", s["top_p"], top_p_rule),
        ("--max-new-tokens", s["max_new_tokens"], at_least_one), ("--batch-size", batch_size, at_least_one),
    )  # fmt: skip


def _check_step_scorers(names: list[str], items: Optional[list[str]]) -> dict:
    """Parse --scorer-option and check, before any model loads, that each named step scorer exists and takes them."""
    from cotkit.plugins import host

    options = parse_key_values(items, "--scorer-option")
    for name in dict.fromkeys(names):
        host().get("step_scorer", name)(**options).close()  # builds nothing heavy: models and sandboxes start lazily
    return options


def _interval(s: dict) -> str:
    """The 95% Wilson interval of an accuracy over its n rows, `[31.2, 51.6]`."""
    from cotkit.stats import wilson_interval

    if s.get("accuracy") is None or not s.get("n"):
        return ""
    low, high = wilson_interval(round(s["accuracy"] * s["n"]), s["n"])
    return f"[{100 * low:.1f}, {100 * high:.1f}]"


def _report(summary: dict, json_output: bool) -> None:
    from cotkit.console import out, print_json

    if json_output:
        print_json(summary)
        return
    from rich.table import Table

    table = Table(title=f"cotkit eval: {summary['task']} ({summary['model']}, {summary['style']})")
    # accuracy counts every completion (errors and timeouts as not correct); the counts stand beside it
    for col in ("task", "n", "accuracy", "95% CI", "± stderr", "accuracy of parsed answers", "unparseable", "timeouts", "errors"):
        table.add_column(col, justify="right")
    rows = [(summary["task"], summary)]
    rows += [(name, {**sub, "stderr": None, "unparseable": None}) for name, sub in summary.get("subtasks", {}).items()]
    for name, s in rows:
        table.add_row(
            name, str(s["n"]), f"{s['accuracy']:.1%}" if s["accuracy"] is not None else "-", _interval(s),
            f"{s['stderr']:.1%}" if s.get("stderr") is not None else "",
            f"{s['accuracy_parsed']:.1%}" if s.get("accuracy_parsed") is not None else "",
            f"{s['unparseable_count']} ({s['unparseable']:.1%})" if s.get("unparseable") is not None else "",
            str(s.get("timeouts", "")), str(s.get("errors", "")),
        )  # fmt: skip
    out.print(table)
    k = summary["samples_per_question"]
    if k > 1:
        out.print(f"mean accuracy over {k} samples: {summary['mean_accuracy']:.1%}; maj@{k}: {summary[f'maj@{k}']:.1%}")
    if "rerank" in summary:
        r = summary["rerank"]
        out.print(
            f"reranked by step scorer {r['step_scorer']} ({r['aggregate']} of step scores): "
            f"best-of-{k} {r['best_of_n']:.1%}, weighted vote {r['weighted_vote']:.1%}"
        )
    if "search" in summary:
        s = summary["search"]
        out.print(f"decoded by step-level beam search: width {s['beam_width']}, {s['expand']} candidates per beam, step scorer {s['step_scorer']}")
    if "parity" in summary:
        p = summary["parity"]
        out.print(
            f"parity with lm-eval task {p['lm_eval_task']} on the same {p['n']} completions: "
            f"lm-eval {p['lm_eval_metric']} = {p['lm_eval_accuracy']:.1%}, cotkit = {p['cotkit_accuracy']:.1%}, "
            f"{p['disagreements']} disagreements"
        )
    out.print(f"results: {summary['output_dir']}/results.json, samples: {summary['output_dir']}/samples.jsonl")


def register(app: typer.Typer) -> None:
    """Add the command."""
    app.command("eval")(eval_command)
