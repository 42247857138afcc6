"""`cotkit train`: run a training method in a resumable run directory.

Method options pass through as flags (`--iterations 3`, `--sft.learning-rate 1e-5`), checked
against the method's Config dataclass; `cotkit show METHOD` lists them.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Optional

import typer

from cotkit.cli import options

EPILOG = (
    "Method options are flags too: `--iterations 3 --sft.learning-rate 1e-5`; `cotkit show METHOD` "
    "lists them with defaults and help. Run options: --backend/-b, --backend-option/-B K=V, --task-option/-O K=V, "
    "--seed, --split-seed, --dev-size, --data-dir, --report-to. Precedence: defaults < --config YAML < flags. "
    "Data-parallel: `accelerate launch --multi_gpu --num_processes N -m cotkit train ...` (GPUs; FSDP or "
    "DeepSpeed through an accelerate config file), `torchrun --nproc_per_node N -m cotkit train ...` (CPUs)."
)


def train(
    ctx: typer.Context,
    method: Optional[str] = typer.Option(None, "--method", help="Training method, e.g. star (`cotkit plugins`)."),
    task: options.Task = None,
    model: options.TrainModel = None,
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file of options (flags override it)."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="Run directory (default runs/<method>-<task>-<model>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --output-dir from its last completed phase."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
    json_output: options.Json = False,
) -> None:
    """Train with a method (sample, verify, fine-tune, evaluate) in a resumable run directory."""
    from cotkit.cli.state import options as global_options
    from cotkit.config import load_yaml, resolve
    from cotkit.console import err, out
    from cotkit.plugins import host
    from cotkit.run import default_output_dir

    tokens = list(ctx.args)
    _refuse_global_options(ctx, tokens)
    overrides = {"method": method, "task": task, "model": model, "output_dir": str(output_dir) if output_dir else None}
    config_file = config
    if resume and output_dir is not None:
        from cotkit.run import check_resume_target

        # Before config.yaml is read as the options: an edited one must not become the run's config.
        check_resume_target(output_dir)
    if resume and output_dir is not None and config is None and (output_dir / "config.yaml").exists():
        # `cotkit train --resume -o runs/x` continues with the options the run started with.
        config_file = output_dir / "config.yaml"
        if method is None:
            overrides["method"] = load_yaml(config_file).get("method")
    resolved = resolve(tokens, config_file, overrides, find_method=partial(host().get, "method"))
    if resolved.run.output_dir is None:
        resolved.run.output_dir = str(default_output_dir(resolved))
    if dry_run:
        sys.stdout.write(resolved.to_yaml())
        sys.stdout.flush()
        return

    from cotkit.errors import RunInterrupted
    from cotkit.run import execute
    from cotkit.run.report import iteration_rows, iteration_table

    try:
        run_ctx = execute(
            resolved, resume=resume, argv=["cotkit", *sys.argv[1:]], data_dir=global_options.data_dir,
            plugin_files=global_options.plugin_files,
        )  # fmt: skip
    except RunInterrupted as e:  # Ctrl-C: the run is marked interrupted; say how to continue it
        err.print(f"Interrupted: the run is kept; resume with: {e.resume}", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    if json_output:
        from cotkit.cli.show_cmd import run_summary
        from cotkit.console import print_json

        print_json(run_summary(run_ctx.path))
        return
    rows = iteration_rows(run_ctx.metrics_rows())
    if not out.is_terminal:  # on a terminal the run has just shown this table
        out.print(iteration_table(rows, title=f"{resolved.run.method} on {resolved.run.task}: held-out accuracy per iteration"))
    held = [r for r in rows if "heldout" in r]
    from cotkit.run.report import fmt_acc

    for r in held:
        who = "base model" if r["iteration"] == 0 else f"after iteration {r['iteration']}"
        out.print(f"{r['heldout'].get('split', 'held-out')} accuracy, {who}: {fmt_acc(r['heldout'])}")
        for variant, ev in (r.get("heldout_variants") or {}).items():
            out.print(f"{ev.get('split', 'held-out')} accuracy, {who}, {ev.get('decoding') or variant}: {fmt_acc(ev)}")
    out.print(f"report: {run_ctx.path / 'report.md'}")


def _refuse_global_options(ctx: typer.Context, tokens: list[str]) -> None:
    """A global option after `train` (other than a run option such as --data-dir) says where it goes.

    Click parses the global options before the command only; without this, `--debug` here would
    be an unknown method option.
    """
    import dataclasses

    from cotkit.config import RunConfig
    from cotkit.errors import ConfigError

    run_flags = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(RunConfig)}
    global_flags = {flag for param in ctx.find_root().command.params for flag in param.opts} - run_flags
    for token in tokens:
        flag = token.split("=", 1)[0]
        if flag in global_flags:
            raise ConfigError(f"{flag} is a global option: put it before the command (`cotkit {flag} ... train ...`)")


def register(app: typer.Typer) -> None:
    """Add the command."""
    app.command(
        "train",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        epilog=EPILOG,
    )(train)
