"""`cotkit eval`: evaluate a model on a task through lm-eval, scored by cotkit's verifier."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from cotkit.cli.common import BACKEND_OPTION, TASK_OPTION, parse_key_values


def eval_command(
    task: str = typer.Option(..., "--task", "-t", help="cotkit task, e.g. gsm8k, bbh:date_understanding, math500, arc:challenge."),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Hub id, local HF folder, .gguf file or alias."),
    backend: str = typer.Option("hf", "--backend", "-b", help="Sampling backend (hf, vllm, or a plugin's)."),
    limit: Optional[int] = typer.Option(None, "--limit", "-l", help="Evaluate the first N examples."),
    style: str = typer.Option("fewshot", "--style", help="Prompt style: fewshot, zeroshot or chat."),
    split: Optional[str] = typer.Option(None, "--split", help="Split (default: the task's standard evaluation split, usually test)."),
    n: int = typer.Option(1, "--n", help="Samples per question (self-consistency with --vote majority)."),
    vote: Optional[str] = typer.Option(None, "--vote", help="'majority': report maj@n as the accuracy."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Default 0 (greedy), or 0.7 when --n > 1."),
    top_p: float = typer.Option(1.0, "--top-p"),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens"),
    verifier: Optional[str] = typer.Option(None, "--verifier", "-v", help="Verifier (default: the task's)."),
    seed: int = typer.Option(0, "--seed"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Backend batch size."),
    backend_option: Optional[list[str]] = BACKEND_OPTION,
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="Where results.json and samples.jsonl go."),
    lm_eval_task: Optional[str] = typer.Option(
        None, "--lm-eval-task", help="Also run this lm-eval built-in task on the same model and compare scorings."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
    task_option: Optional[list[str]] = TASK_OPTION,
    rerank: Optional[str] = typer.Option(
        None, "--rerank", help="Step scorer (arith, exec, prm) reranking the --n samples: adds best-of-N and weighted-vote accuracy."
    ),
    aggregate: str = typer.Option("min", "--aggregate", help="Step scores to a solution score: min, prod or last."),
    search: Optional[str] = typer.Option(None, "--search", help="'beam': step-level beam search decoding scored by --step-scorer."),
    step_scorer: Optional[str] = typer.Option(None, "--step-scorer", help="Step scorer guiding --search beam (arith, exec, prm)."),
    beam_width: int = typer.Option(4, "--beam-width", help="Beams kept at every step of --search beam."),
    beam_expand: int = typer.Option(4, "--beam-expand", help="Candidate next steps sampled per beam."),
    max_steps: int = typer.Option(24, "--max-steps", help="Steps at most per solution in beam search."),
    step_tokens: int = typer.Option(96, "--step-tokens", help="Tokens at most per generated line in beam search."),
    logprob_weight: float = typer.Option(0.0, "--logprob-weight", help="Add this x the model's mean token log-probability to beam scores."),
    scorer_option: Optional[list[str]] = typer.Option(
        None, "--scorer-option", "-S", help="A step scorer option KEY=VALUE (repeatable), e.g. -S model=path/to/prm -S neutral=1."
    ),
) -> None:
    """Evaluate through lm-eval: accuracy with standard error, unparseable rate, n; per-sample JSONL."""
    from cotkit.cli.common import make_task
    from cotkit.contracts import check_styles
    from cotkit.errors import ConfigError

    check_styles(style)
    if vote not in (None, "majority"):
        raise ConfigError(f"--vote {vote!r}: only 'majority' is supported")
    _check_sampling_values(n, limit, temperature, top_p, max_new_tokens, batch_size)
    task_obj = make_task(task, task_option)
    scorer_options = _check_step_scorers([s for s in (rerank, step_scorer) if s], scorer_option)
    from cotkit.lmeval.runner import EvalSettings, evaluate
    from cotkit.models import load_backend

    if output_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        output_dir = Path("runs") / "eval" / f"{task_obj.full_name.replace(':', '_')}-{Path(model).name}-{stamp}"
    from cotkit.outputs import check_output_dir

    check_output_dir(output_dir, "--output-dir")  # before the model loads: a bad folder must not cost the evaluation
    settings = EvalSettings(
        style=style, split=split, limit=limit, n=n, vote=vote, temperature=temperature, top_p=top_p,
        max_new_tokens=max_new_tokens, verifier=verifier, seed=seed,
        data_dir=str(task_obj.data_dir) if task_obj.data_dir else None, task_options=dict(task_obj.task_options),
        rerank=rerank, aggregate=aggregate, search=search, step_scorer=step_scorer, scorer_options=scorer_options,
        beam_width=beam_width, beam_expand=beam_expand, max_steps=max_steps, step_tokens=step_tokens,
        logprob_weight=logprob_weight,
    )
    backend_options = parse_key_values(backend_option, "--backend-option")
    if batch_size:
        backend_options["batch_size"] = batch_size
    be = load_backend(backend, model=model, **backend_options)
    try:
        summary = evaluate(task_obj, be, settings, output_dir)
        if lm_eval_task:
            from cotkit.lmeval.parity import compare

            summary["parity"] = compare(lm_eval_task, task_obj, be, settings, output_dir)
    finally:
        be.close()
    summary["output_dir"] = str(output_dir)
    _report(summary, json_output)


def _check_sampling_values(n: int, limit, temperature, top_p: float, max_new_tokens: int, batch_size) -> None:
    """One-line errors naming the option, before any data or model loads."""
    from cotkit.option_checks import at_least_one, check_values
    from cotkit.option_checks import temperature as temperature_rule
    from cotkit.option_checks import top_p as top_p_rule

    check_values(
        ("--n", n, at_least_one), ("--limit", limit, at_least_one), ("--temperature", temperature, temperature_rule),
        ("--top-p", top_p, top_p_rule), ("--max-new-tokens", max_new_tokens, at_least_one),
        ("--batch-size", batch_size, at_least_one),
    )  # fmt: skip


def _check_step_scorers(names: list[str], items: Optional[list[str]]) -> dict:
    """Parse --scorer-option and check, before any model loads, that each named step scorer exists and takes them."""
    from cotkit.plugins import host

    options = parse_key_values(items, "--scorer-option")
    for name in dict.fromkeys(names):
        host().get("step_scorer", name)(**options).close()  # builds nothing heavy: models and sandboxes start lazily
    return options


def _report(summary: dict, json_output: bool) -> None:
    from cotkit.console import out, print_json

    if json_output:
        print_json(summary)
        return
    from rich.table import Table

    table = Table(title=f"cotkit eval: {summary['task']} ({summary['model']}, {summary['style']})")
    # accuracy counts every completion (errors and timeouts as not correct); the counts stand beside it
    for col in ("task", "n", "accuracy", "± stderr", "accuracy of parsed answers", "unparseable", "timeouts", "errors"):
        table.add_column(col, justify="right")
    rows = [(summary["task"], summary)]
    rows += [(name, {**sub, "stderr": None, "unparseable": None}) for name, sub in summary.get("subtasks", {}).items()]
    for name, s in rows:
        table.add_row(
            name, str(s["n"]), f"{s['accuracy']:.1%}" if s["accuracy"] is not None else "-",
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
