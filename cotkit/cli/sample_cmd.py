"""`cotkit sample`: sample completions for a task's questions, verify them, show and save them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from cotkit.cli.common import BACKEND_OPTION, TASK_OPTION


def sample_command(
    task: str = typer.Option(..., "--task", "-t", help="Task, e.g. gsm8k, bbh:date_understanding, math500, arc:challenge."),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Hub id, local HF folder, .gguf file or alias."),
    n: int = typer.Option(4, "--n", "-n", help="Samples per question."),
    limit: int = typer.Option(5, "--limit", "-l", help="Sample the first N questions of the split."),
    every_question: bool = typer.Option(False, "--all", help="Sample every question of the split (instead of --limit)."),
    temperature: float = typer.Option(0.7, "--temperature", help="0 is greedy decoding."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling: keep the smallest token set with this mass."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Most tokens generated per sample."),
    style: str = typer.Option("fewshot", "--style", help="Prompt style: fewshot, zeroshot or chat."),
    split: Optional[str] = typer.Option(None, "--split", help="Split (default: the task's held-out split, usually test)."),
    backend: str = typer.Option("hf", "--backend", "-b", help="Sampling backend (hf, vllm, or a plugin's)."),
    seed: int = typer.Option(0, "--seed", help="Run seed; each sample's seed derives from it, the question id and the sample index."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Rows decoded together (default: the backend's auto)."),
    verifier: Optional[str] = typer.Option(None, "--verifier", "-v", help="Verifier (default: the task's)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the samples as JSONL (cotkit score format + verdicts)."),
    include_prompt: bool = typer.Option(False, "--include-prompt", help="Also write each sample's prompt to the JSONL."),
    show_prompt: bool = typer.Option(False, "--show-prompt", help="Print each question's full prompt."),
    width: int = typer.Option(400, "--width", help="Characters of each completion shown in the table (0: all)."),
    task_option: Optional[list[str]] = TASK_OPTION,
    backend_option: Optional[list[str]] = BACKEND_OPTION,
) -> None:
    """Sample completions, verify them, show each question's completions with verdicts; save with --output."""
    from cotkit.cli.common import make_task, parse_key_values
    from cotkit.contracts import SamplingParams, check_styles
    from cotkit.errors import ConfigError
    from cotkit.option_checks import at_least_one, check_values
    from cotkit.option_checks import temperature as temperature_rule
    from cotkit.option_checks import top_p as top_p_rule
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

    from cotkit.harness.sample import sample
    from cotkit.harness.verify import make_verifier, sample_row, summarize, verify_samples
    from cotkit.models import load_backend

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
    _show(task_obj.full_name, model, samples, summary, show_prompt, width, checker.name)
    if output is not None:
        from cotkit.console import out
        from cotkit.outputs import save_jsonl

        save_jsonl(output, [sample_row(s, include_prompt=include_prompt) for s in samples], "--output")
        out.print(f"wrote {len(samples)} samples to {output}")


_STYLE = {"correct": "green", "incorrect": "red", "unparseable": "yellow", "timeout": "magenta", "error": "magenta"}


def _clip(text: str, width: int) -> str:
    return text if not width or len(text) <= width else text[:width] + f"… (+{len(text) - width} chars)"


def _show(task: str, model: str, samples: list[Any], summary: dict[str, Any], show_prompt: bool, width: int, verifier: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    from cotkit.console import out

    table = Table(title=f"cotkit sample: {task} with {model}", show_lines=False, expand=True)
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
        question = f"{escape(_clip(s.example.question, 300))}\n[dim]{escape(s.example.id)} · gold {escape(str(s.example.answer))}[/dim]" if first else ""
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
        f"{summary['correct']}/{summary['n']} correct ({summary['accuracy']:.1%}) by {verifier}, "
        f"unparseable {summary['unparseable_count']}, errors {summary['errors']}"
    )


def register(app: typer.Typer) -> None:
    """Add the command."""
    app.command("sample")(sample_command)
