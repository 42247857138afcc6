"""`cotkit sample`: sample completions for a task's questions, verify them, show and save them."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from cotkit.cli import options
from cotkit.models import DEFAULT_MODEL


def sample_command(
    task: options.Task,
    model: options.Model = DEFAULT_MODEL,
    n: Annotated[int, typer.Option("--n", "-n", help="Samples per question.")] = 4,
    limit: options.Limit = 5,
    every_question: Annotated[bool, typer.Option("--all", help="Sample every question of the split (instead of --limit).")] = False,
    temperature: Annotated[float, typer.Option("--temperature", help="0 is greedy decoding.")] = 0.7,
    top_p: options.TopP = 1.0,
    max_new_tokens: options.MaxNewTokens = 256,
    style: options.Style = "fewshot",
    split: Annotated[Optional[str], typer.Option("--split", help="Split (default: the task's held-out split, usually test).")] = None,
    backend: options.Backend = None,
    no_thoughts: options.NoThoughts = False,
    seed: options.Seed = 0,
    batch_size: options.BatchSize = None,
    verifier: options.Verifier = None,
    output: options.Output = None,
    include_prompt: Annotated[bool, typer.Option("--include-prompt", help="Also write each sample's prompt to the JSONL.")] = False,
    show_prompt: Annotated[bool, typer.Option("--show-prompt", help="Print each question's full prompt.")] = False,
    width: Annotated[int, typer.Option("--width", help="Characters of each completion shown in the table (0: all).")] = 400,
    task_option: options.TaskOptions = None,
    backend_option: options.BackendOptions = None,
    json_output: options.Json = False,
) -> None:
    """Sample completions, verify them, show each question's completions with verdicts; save with --output."""
    from cotkit.cli.common import make_task
    from cotkit.contracts import SamplingParams, check_styles
    from cotkit.errors import ConfigError
    from cotkit.option_checks import at_least_one, check_values
    from cotkit.option_checks import temperature as temperature_rule
    from cotkit.option_checks import top_p as top_p_rule
    from cotkit.options import parse_key_values
    from cotkit.outputs import check_output_file

    check_styles(style)
    check_values(
        ("--n", n, at_least_one), ("--limit", limit, at_least_one), ("--temperature", temperature, temperature_rule),
        ("--top-p", top_p, top_p_rule), ("--max-new-tokens", max_new_tokens, at_least_one),
        ("--batch-size", batch_size, at_least_one),
    )  # fmt: skip
    check_output_file(output, "--output")  # before the model loads: a bad path must not cost the samples
    task_obj = make_task(task, task_option)
    examples = task_obj.examples(split or task_obj.heldout_split, limit=None if every_question else limit)
    if not examples:
        raise ConfigError(f"task {task_obj.full_name} has no examples in split {split or task_obj.heldout_split}")
    params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed)
    options = parse_key_values(backend_option, "--backend-option")
    if batch_size is not None:
        options["batch_size"] = batch_size

    from cotkit.cli.common import choose_backend
    from cotkit.harness.sample import sample
    from cotkit.harness.verify import make_verifier, sample_row, summarize, verify_samples
    from cotkit.models import load_backend

    backend = choose_backend(backend, model, options, no_thoughts)
    be = load_backend(backend, model=model, **options)
    try:
        samples = sample(task_obj, examples, be, params, style=style)
    finally:
        be.close()
    checker = make_verifier(verifier, task_obj)
    try:
        verdicts = verify_samples(samples, checker)
    finally:
        checker.close()
    summary = summarize(verdicts)
    rows = [sample_row(s, include_prompt=include_prompt) for s in samples]
    if output is not None:
        from cotkit.outputs import save_jsonl

        save_jsonl(output, rows, "--output")
    if json_output:
        from cotkit.console import print_json

        print_json({"task": task_obj.full_name, "model": model, "verifier": checker.name, "summary": summary, "samples": rows})
        return
    _show(task_obj.full_name, model, samples, summary, show_prompt, width, checker.name)
    if output is not None:
        from cotkit.console import out

        out.print(f"wrote {len(samples)} samples to {output}")


_STYLE = {"correct": "green", "incorrect": "red", "unparseable": "yellow", "timeout": "magenta", "error": "magenta"}


def _clip(text: str, width: int) -> str:
    return text if not width or len(text) <= width else text[:width] + f"… (+{len(text) - width} chars)"


def _question_cell(example: Any) -> str:
    """The question, its answer choices when it has some, its id and gold answer (rich markup)."""
    from rich.markup import escape

    text = escape(_clip(example.question, 300))
    if example.choices:
        text += "\n" + escape("  ".join(f"({c.label}) {c.text}" for c in example.choices))
    return f"{text}\n[dim]{escape(example.id)} · gold {escape(str(example.answer))}[/dim]"


def _show(task: str, model: str, samples: list[Any], summary: dict[str, Any], show_prompt: bool, width: int, verifier: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    from cotkit.console import out

    table = Table(title=f"cotkit sample: {task} with {model}", show_lines=False, expand=out.is_terminal)
    table.add_column("question", ratio=2, overflow="fold")
    table.add_column("#", justify="right", width=3)
    table.add_column("completion", ratio=5, overflow="fold")
    table.add_column("verdict", width=11)
    table.add_column("extracted", ratio=1, overflow="fold")
    previous = None
    for s in samples:
        first = s.example.id != previous
        if first and previous is not None:
            table.add_section()
        previous = s.example.id
        question = _question_cell(s.example) if first else ""
        status = s.verdict.status.value if s.verdict else "-"
        meta = s.meta
        tail = f"\n[dim]{meta.get('n_tokens', '?')} tokens, {meta.get('finish_reason', '?')}[/dim]"
        table.add_row(
            question,
            str(meta.get("sample_index", "")),
            escape(_clip(s.completion.strip(), width)) + tail,
            f"[{_STYLE.get(status, 'white')}]{status}[/]",
            escape(str(s.verdict.extracted)) if s.verdict and s.verdict.extracted is not None else "",
        )
    if show_prompt:
        seen = set()
        for s in samples:
            if s.example.id not in seen:
                seen.add(s.example.id)
                prompt = s.prompt if isinstance(s.prompt, str) else "\n".join(f"[{m['role']}] {m['content']}" for m in s.prompt or [])
                out.rule(f"prompt of {s.example.id}")
                out.print(escape(prompt), highlight=False)
    out.print(table)
    out.print(
        f"{summary['correct']}/{summary['n']} correct ({summary['accuracy']:.1%}, 95% CI "
        f"[{100 * summary['ci_low']:.1f}, {100 * summary['ci_high']:.1f}]) by {verifier}, "
        f"unparseable {summary['unparseable_count']}, errors {summary['errors']}"
    )


def register(app: typer.Typer) -> None:
    """Add the command."""
    app.command("sample")(sample_command)
