"""Base classes every plugin extends: Task, Verifier, StepScorer, Backend, Method.

A plugin registers the class (not an instance), so nothing heavy is built at import time. The
class attributes `name` and `description` are what `cotkit plugins` lists; `description`
defaults to the first line of the class docstring.

Every kind declares its options the same way: a `Config` dataclass whose fields are made with
`option(default, help=...)` (`cotkit show NAME` lists them). A method's options are resolved with
the run's (`cotkit.config`); a task, verifier, step scorer or backend gets its options as keyword
arguments (`-O`, `-B`, `-S KEY=VALUE` text, YAML values or Python values), and the contract's
constructor checks and types them into `self.config`. A plugin without options keeps the
default, `NoOptions`, and refuses any.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cotkit.errors import ConfigError, DataError, UnknownNameError
from cotkit.options import NoOptions, plugin_config
from cotkit.types import Example, Prompt, Sample, Verdict

if TYPE_CHECKING:  # a type only: the run layer sits above the contracts
    from cotkit.run import RunContext

#: `fewshot`: exemplars, then the question; `zeroshot`: the question and "Let's think step by step.";
#: `chat`: one user turn; `bare`: the few-shot prompt's last block alone (`Q: ...\nA:`), no exemplars.
PROMPT_STYLES = ("fewshot", "zeroshot", "chat", "bare")
#: How `Task.prompt(..., hint=...)` may give the gold answer (True means `sentence`).
HINT_FORMATS = ("sentence", "inline")


class Plugin:
    """Common class attributes of everything a plugin registers."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: The plugin's options: a dataclass of `option(...)` fields (`NoOptions`: it takes none).
    Config: ClassVar[type] = NoOptions

    @classmethod
    def summary(cls) -> str:
        """One-line description: `description`, else the docstring's first line."""
        if cls.description:
            return cls.description
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


# --------------------------------------------------------------------------------------- tasks


class Task(Plugin):
    """A benchmark: loads examples from the hub or a local data directory and builds prompts.

    Subclasses set `splits`, `train_split` and `heldout_split`, and implement `rows`,
    `example_from_row` and `prompt`. A task with named subsets (BBH's 27, ARC's two) lists them
    in `subsets` and is addressed as `name:subset`.
    """

    #: Splits this task can load (publisher splits, or carved ones the task documents).
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    #: The split methods train on, and the one disjoint from it that reports final accuracy.
    train_split: ClassVar[str] = "train"
    heldout_split: ClassVar[str] = "test"
    #: The standard benchmark split `cotkit eval` reports on by default.
    eval_split: ClassVar[str] = "test"
    subsets: ClassVar[tuple[str, ...]] = ()
    #: True when the bare name (no subset) means "all subsets" (a group, like `bbh`).
    group: ClassVar[bool] = False
    default_subset: ClassVar[str | None] = None
    default_verifier: ClassVar[str] = "exact_match"
    #: Fields an input row must have in the publisher's format (checked by `cotkit score`).
    row_fields: ClassVar[tuple[str, ...]] = ()
    #: A folder of this task's lm-eval YAMLs beside cotkit's own (a plugin package ships its own); None: cotkit's.
    lm_eval_yamls: ClassVar[str | None] = None

    def __init__(
        self,
        subset: str | None = None,
        data_dir: str | Path | None = None,
        split_seed: int = 1234,
        dev_size: int | None = None,
        **options: Any,
    ):
        if subset is not None and subset not in self.subsets:
            raise UnknownNameError(f"{self.name} subset", subset, self.subsets)
        if subset is None and self.subsets and not self.group:
            subset = self.default_subset
        #: The task's options (`-O KEY=VALUE`, `task_options:`), typed by its `Config`.
        self.config = plugin_config(self.Config, options, f"task {self.name}")
        #: The options as given, for building the same task again (a group's members, lm-eval's docs).
        self.task_options = dict(options)
        self.subset = subset
        self.data_dir = Path(data_dir).expanduser() if data_dir else None
        self.split_seed = split_seed
        self.dev_size = dev_size

    # -- identity ----------------------------------------------------------------------------

    @property
    def full_name(self) -> str:
        """`name` or `name:subset`, the string that addresses this task."""
        return f"{self.name}:{self.subset}" if self.subset else self.name

    # -- data --------------------------------------------------------------------------------

    def rows(self, split: str) -> list[dict[str, Any]]:
        """The publisher's rows for one publisher split, unchanged."""
        raise NotImplementedError

    def example_from_row(self, row: dict[str, Any], index: int) -> Example:
        """Turn one publisher row into an Example; raise DataError naming the missing field."""
        raise NotImplementedError

    def examples(self, split: str, limit: int | None = None) -> list[Example]:
        """Examples of a split: a task split, or `dev` / `fit` carved from the training split.

        `dev` is a deterministic held-out slice of `train_split` (seeded by `split_seed`) for
        methods that evaluate while they train; `fit` is the rest of `train_split`.
        """
        if split in ("dev", "fit"):
            train = self.examples(self.train_split)
            dev, fit = carve(train, self.dev_size or default_dev_size(len(train)), self.split_seed)
            out = dev if split == "dev" else fit
        elif split in self.splits:
            out = [self.example_from_row(row, i) for i, row in enumerate(self.rows(split))]
        else:
            raise UnknownNameError(f"split of task {self.full_name}", split, (*self.splits, "dev", "fit"))
        return out[:limit] if limit is not None else out

    # -- prompts -----------------------------------------------------------------------------

    def prompt(self, example: Example, style: str = "fewshot", hint: bool | str = False) -> Prompt:
        """The model input for `example` in a prompt style; `hint` gives the gold answer (rationalization).

        `hint` is True or the name of a hint format the task documents (the built-in tasks:
        `sentence`, `inline`); a task with one format renders that for any true value.
        """
        raise NotImplementedError

    def stop_sequences(self, style: str = "fewshot") -> list[str]:
        """Where a completion in this style ends (the start of a next question)."""
        return ["\n\nQ:", "\nQ:", "\n\nQuestion:"] if style != "chat" else []

    def answer_sentence(self, example: Example) -> str:
        """How a rationale in this task states its final answer (used for training targets)."""
        return f"The answer is {example.answer}."

    def question_text(self, example: Example, hint: bool | str = False) -> str:
        """The question as a prompt shows it (a task with answer choices lists them); `hint` as in `prompt`."""
        return example.question

    def answer_text(self, example: Example) -> str:
        """The gold answer as an answer sentence writes it (`(C)` for an option)."""
        return example.answer

    def gold_program(self, example: Example) -> str | None:
        """A program computing the answer (`def solution(): ... return result`) where the dataset has one, else None."""
        return None


def default_dev_size(n_train: int) -> int:
    """The dev slice carved from a training split of n rows: 10%, between 1 and 500."""
    return max(1, min(500, n_train // 10)) if n_train > 1 else 0


def carve(items: Sequence[Any], size: int, seed: int) -> tuple[list[Any], list[Any]]:
    """Split items into (a seeded random `size` of them, the rest), each in original order."""
    if size > len(items):
        raise ConfigError(f"cannot carve {size} examples from a split of {len(items)}")
    picked = set(random.Random(seed).sample(range(len(items)), size))
    chosen = [x for i, x in enumerate(items) if i in picked]
    rest = [x for i, x in enumerate(items) if i not in picked]
    return chosen, rest


# ----------------------------------------------------------------------------------- verifiers


class Verifier(Plugin):
    """Turns completions into verdicts. Batch-shaped: a list of samples in, a list of verdicts out."""

    def __init__(self, **options: Any):
        #: The verifier's options, typed by its `Config`.
        self.config = plugin_config(self.Config, options, f"verifier {self.name}")
        #: The options as given.
        self.options = options

    def verify(self, samples: list[Sample]) -> list[Verdict]:
        """One verdict per sample, in order; never raises for a bad sample (verdict `error`)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release workers or other resources."""


class StepScorer(Plugin):
    """Splits a completion into steps and scores each (higher is better)."""

    #: What a step is: "text" (lines or sentences) or "program" (statements); decoding uses it.
    step_unit: ClassVar[str] = "text"

    def __init__(self, **options: Any):
        #: The step scorer's options (`-S KEY=VALUE`), typed by its `Config`.
        self.config = plugin_config(self.Config, options, f"step scorer {self.name}")
        #: The options as given.
        self.options = options

    def split(self, completion: str, example: Example | None = None) -> list[str]:
        """The steps of a completion, in order, joining back to the completion."""
        lines = completion.splitlines(keepends=True)
        return [s for s in lines if s.strip()] or ([completion] if completion else [])

    def score_steps(self, example: Example, steps: list[str]) -> list[float]:
        """A score per step given the steps before it."""
        raise NotImplementedError

    def close(self) -> None:
        """Release workers or models."""


# ------------------------------------------------------------------------------------ backends


@dataclass
class Generation:
    """One sampled continuation."""

    text: str
    n_tokens: int = 0
    #: "stop" (a stop string or end-of-sequence), or "length" (max_new_tokens reached).
    finish_reason: str = "stop"
    #: What a backend knows about this continuation beyond its text (e.g. the thoughts of a thinking model); joins `Sample.meta`.
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class SamplingParams:
    """How to sample: the same fields for every backend."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop: list[str] | None = None
    seed: int = 0


#: Seeds stay below 2**63, so every sampler (torch, vLLM, an HTTP server) accepts them.
SEED_MASK = (1 << 63) - 1


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample `index` of a prompt whose first sample has `seed`: the rule every backend follows."""
    return (seed + index) & SEED_MASK


class Backend(Plugin):
    """Generates completions from a model; one interface for transformers, vLLM and others."""

    def __init__(self, model: str, **options: Any):
        self.model_name = model
        #: The backend's options (`-B KEY=VALUE`, `backend_options:`), typed by its `Config`.
        self.config = plugin_config(self.Config, options, f"backend {self.name}")
        #: The options as given.
        self.options = options

    def generate(
        self,
        prompts: list[Prompt],
        params: SamplingParams,
        progress: bool = True,
        seeds: Sequence[int] | None = None,
    ) -> list[list[Generation]]:
        """`params.n` generations for each prompt, in prompt order.

        Sample j of prompt i is drawn with seed `seeds[i] + j`, so it does not depend on the other
        prompts in the call; without `seeds`, a prompt's seed derives from `params.seed` and its text.
        """
        raise NotImplementedError

    def loglikelihood(self, pairs: list[tuple[Prompt, str]]) -> list[float]:
        """Sum of log-probabilities of each continuation given its context."""
        raise NotImplementedError(f"backend {self.name} cannot score log-likelihoods")

    def close(self) -> None:
        """Free the model's memory (called before a method fine-tunes)."""

    def sleep(self) -> bool:
        """Stay loaded while a method fine-tunes, freeing what memory it can, for `load_weights` after.

        False (the default): this backend cannot be kept, so the run closes it instead.
        """
        return False

    def load_weights(self, model: str) -> bool:
        """Serve `model` (a fine-tuned checkpoint of the model it holds) from now on, without starting again.

        False (the default) when it cannot, e.g. `model` has another architecture or tokenizer:
        the run then closes it and loads a new backend.
        """
        return False


# ------------------------------------------------------------------------------------- methods


class Method(Plugin):
    """A training method: a `Config` dataclass of options and a `run(ctx)` outer loop."""

    #: The paper the method follows, shown by `cotkit show`.
    paper: ClassVar[str] = ""

    def run(self, ctx: RunContext) -> Any:
        """Run the whole method inside a run context (resumable phases); annotate `ctx: RunContext[MyConfig]`."""
        raise NotImplementedError


KINDS: dict[str, type[Plugin]] = {
    "task": Task,
    "verifier": Verifier,
    "step_scorer": StepScorer,
    "backend": Backend,
    "method": Method,
}


def check_styles(style: str, allowed: Iterable[str] = PROMPT_STYLES) -> str:
    """Validate a prompt style name."""
    if style not in allowed:
        raise UnknownNameError("prompt style", style, allowed)
    return style


def hint_format(hint: bool | str) -> str | None:
    """The hint format a `prompt(..., hint=...)` argument asks for: None (no hint), True = `sentence`, or a named one."""
    if not hint:
        return None
    if hint is True:
        return "sentence"
    if hint not in HINT_FORMATS:
        raise UnknownNameError("hint format", str(hint), HINT_FORMATS)
    return str(hint)


def require_fields(row: dict[str, Any], fields: Iterable[str], where: str) -> None:
    """Raise DataError naming the first missing field of a row."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for f in fields:
        if f not in row:
            raise DataError(f"{where}: missing field {f!r}")
