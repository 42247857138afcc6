"""The command line's option vocabulary: every option that several commands take, declared once.

A command annotates a parameter with an alias and gives only its default (`task: options.Task`,
`limit: options.Limit = 5`): the flag, its short form and its help are written here and nowhere
else, so `--task` reads the same in `sample`, `eval`, `score` and `train`. An option whose
meaning differs between commands (`--split` defaults to a different split in `sample` and `eval`,
`--output-dir` is a results folder in one and a run directory in the other) stays with its command.

`with_settings_options` serves a command whose options are the fields of a settings dataclass
(`cotkit eval` and `EvalSettings`): each option's type and default are the field's, its help the
field's or this vocabulary's, so a default is written once, in the dataclass.

The global options (`--data-dir`, `--plugin`, `--debug`) are declared in `cotkit.cli.main`, the one
place that parses them.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

# ---------------------------------------------------------------------------- what to run on

Task = Annotated[
    Optional[str], typer.Option("--task", "-t", help="Task, e.g. gsm8k, bbh:date_understanding, math500, arc:challenge.")
]
_MODEL_HELP = "Model: an alias (`cotkit models list`), hub id, local HF folder or .gguf file."
Model = Annotated[str, typer.Option("--model", "-m", help=_MODEL_HELP)]
#: `train`'s --model is optional: a --config file or the run being resumed may name the model.
TrainModel = Annotated[Optional[str], typer.Option("--model", "-m", help=_MODEL_HELP)]
Backend = Annotated[
    Optional[str],
    typer.Option("--backend", "-b", help="Sampling backend (hf, vllm, or a plugin's; default: the one a checkpoint names, else hf)."),
]
NoThoughts = Annotated[
    bool,
    typer.Option(
        "--no-thoughts",
        help="Decode a checkpoint that thinks before every token (Quiet-STaR's) on its base path: the backend option thoughts=false.",
    ),
]
Verifier = Annotated[Optional[str], typer.Option("--verifier", help="Verifier (default: the task's).")]

# ------------------------------------------------------------------- plugin options KEY=VALUE

TaskOptions = Annotated[
    Optional[list[str]],
    typer.Option("--task-option", "-O", help="A task option KEY=VALUE (repeatable), e.g. -O level=5 -O subject=algebra."),
]
BackendOptions = Annotated[
    Optional[list[str]],
    typer.Option("--backend-option", "-B", help="A backend option KEY=VALUE (repeatable), e.g. -B device=cpu -B dtype=bfloat16."),
]
ScorerOptions = Annotated[
    Optional[list[str]],
    typer.Option(
        "--scorer-option", "-S", help="A step scorer option KEY=VALUE (repeatable), e.g. -S model=path/to/prm -S neutral=1."
    ),
]

# ------------------------------------------------------------------------------- how to sample

Limit = Annotated[Optional[int], typer.Option("--limit", "-l", help="Take the first N questions of the split.")]
Style = Annotated[str, typer.Option("--style", help="Prompt style: fewshot, zeroshot, chat or bare (the few-shot layout without exemplars).")]
TopP = Annotated[float, typer.Option("--top-p", help="Nucleus sampling: keep the smallest token set with this mass.")]
MaxNewTokens = Annotated[int, typer.Option("--max-new-tokens", help="Most tokens generated per sample.")]
Seed = Annotated[
    int, typer.Option("--seed", help="Sampling seed; each sample's seed derives from it, the question id and the sample index.")
]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", help="Rows decoded together (default: the backend's auto).")]

# ------------------------------------------------------------------------------------- output

Output = Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the rows, with their verdicts, to this JSONL file.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]

#: The aliases a settings field of the same name takes its flag and help from.
_BY_FIELD_NAME = {
    "task": Task, "model": Model, "backend": Backend, "verifier": Verifier, "limit": Limit, "style": Style,
    "top_p": TopP, "max_new_tokens": MaxNewTokens, "seed": Seed, "batch_size": BatchSize,
}  # fmt: skip


def with_settings_options(settings: type, *, not_options: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
    """Give a command one option per field of the dataclass `settings`, gathered in its `**kwargs`.

    Type and default are the field's. A field named like an alias of this vocabulary takes the
    alias's flag and help; any other becomes `--field-name` with the field's `help` metadata.
    Fields in `not_options` are left to the command (filled from other options or not at all).
    """

    def decorate(command: Callable) -> Callable:
        hints = typing.get_type_hints(command, include_extras=True)
        own = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in inspect.signature(command).parameters.values()
            if p.kind is not p.VAR_KEYWORD
        ]
        field_types = typing.get_type_hints(settings)
        derived = []
        for f in dataclasses.fields(settings):
            if f.name in not_options:
                continue
            if f.name in _BY_FIELD_NAME:
                info = typing.get_args(_BY_FIELD_NAME[f.name])[1]
            else:
                info = typer.Option("--" + f.name.replace("_", "-"), help=f.metadata["help"])
            annotation = Annotated[field_types[f.name], info]
            default = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default  # none: a required option
            derived.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation))
        # Typer reads a command's options from its signature.
        command.__signature__ = inspect.Signature(own + derived)  # type: ignore[attr-defined]
        return command

    return decorate
