"""cotkit: train and evaluate chain-of-thought reasoning in language models.

This namespace is the public API, the one import surface for plugin authors (tasks, verifiers,
step scorers, backends, methods) and for scripts. Everything listed in `__all__` is stable:
plugins written against `from cotkit import ...` keep working when the modules behind it move.
Anything imported from a submodule (`cotkit.harness.train`, ...) is internal and may change.

Names are loaded lazily (PEP 562 `__getattr__`), so `import cotkit` and `cotkit --help` stay light:
torch, transformers and rich are imported only when a name that needs them is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it; grouped as the README's "Writing a plugin" lists them.
_EXPORTS: dict[str, str] = {
    # plugin registration
    "hookimpl": "cotkit.hookspecs",
    "load_task": "cotkit.plugins",
    # contracts: what a plugin subclasses
    "Task": "cotkit.contracts",
    "Verifier": "cotkit.contracts",
    "StepScorer": "cotkit.contracts",
    "Backend": "cotkit.contracts",
    "Method": "cotkit.contracts",
    "PROMPT_STYLES": "cotkit.contracts",
    "check_styles": "cotkit.contracts",
    "HINT_FORMATS": "cotkit.contracts",
    "hint_format": "cotkit.contracts",
    "require_fields": "cotkit.contracts",
    # data types
    "Example": "cotkit.types",
    "Choice": "cotkit.types",
    "AnswerKind": "cotkit.types",
    "Prompt": "cotkit.types",
    "Message": "cotkit.types",
    "Sample": "cotkit.types",
    "Verdict": "cotkit.types",
    "Status": "cotkit.types",
    "SamplingParams": "cotkit.contracts",
    "SEED_MASK": "cotkit.contracts",
    "sample_seed": "cotkit.contracts",
    "Generation": "cotkit.contracts",
    # options and configs
    "option": "cotkit.options",
    "SplitLimits": "cotkit.harness.iterate",
    "SFTConfig": "cotkit.harness.train",
    # the run a method is given, and the process it runs in
    "RunContext": "cotkit.run",
    "is_main_process": "cotkit.run",
    # harness steps: sampling
    "sample": "cotkit.harness.sample",
    "example_seed": "cotkit.harness.sample",
    "merge_stops": "cotkit.harness.sample",
    "accepts_seeds": "cotkit.harness.sample",
    "load_backend": "cotkit.models",
    "cache_kwarg": "cotkit.models",
    "resolve_model": "cotkit.models",
    "write_backend_file": "cotkit.models",
    "ModelSlot": "cotkit.harness.iterate",
    "TeacherCache": "cotkit.harness.teacher_cache",
    "CachedTeacher": "cotkit.harness.teacher_cache",
    # harness steps: verifying and evaluating
    "make_verifier": "cotkit.harness.verify",
    "make_step_scorer": "cotkit.harness.stepsearch",
    "verify_samples": "cotkit.harness.verify",
    "sample_row": "cotkit.harness.verify",
    "summarize": "cotkit.harness.verify",
    "wilson_interval": "cotkit.stats",
    "evaluate": "cotkit.harness.evaluate",
    "greedy_accuracy": "cotkit.harness.iterate",
    "BeamBackend": "cotkit.harness.stepsearch",
    "BeamSettings": "cotkit.harness.stepsearch",
    "prompt_key": "cotkit.harness.stepsearch",
    # harness steps: fine-tuning and its objectives
    "method_splits": "cotkit.harness.iterate",
    "Splits": "cotkit.harness.iterate",
    "fine_tune": "cotkit.harness.iterate",
    "capped_steps": "cotkit.harness.iterate",
    "phase_seconds": "cotkit.harness.iterate",
    "prune_checkpoints": "cotkit.harness.iterate",
    "eval_phases": "cotkit.harness.iterate",
    "TrainExample": "cotkit.harness.train",
    "is_encoder_decoder": "cotkit.harness.seq2seq",
    "render_prompt_ids": "cotkit.harness.train",
    "completion_ids": "cotkit.harness.train",
    "Objective": "cotkit.harness.train",
    "WeightedSFT": "cotkit.harness.train",
    "LossFnObjective": "cotkit.harness.train",
    "OnlineObjective": "cotkit.harness.online",
    "with_soft_prompt": "cotkit.harness.softprompt",
    "DPONLLObjective": "cotkit.harness.preference",
    "PreferencePair": "cotkit.harness.preference",
    # verifiers and step scorers as rewards of online RL trainers (TRL's reward_funcs)
    "VerifierReward": "cotkit.rewards",
    "StepScorerReward": "cotkit.rewards",
    "reward_rows": "cotkit.rewards",
    # files: atomic writes, one JSONL reader, task data
    "atomic_write_jsonl": "cotkit.jsonl",
    "append_jsonl_rows": "cotkit.jsonl",
    "read_jsonl": "cotkit.jsonl",
    "read_jsonl_tolerant": "cotkit.jsonl",
    "read_json": "cotkit.data",
    "load_rows": "cotkit.data",
    "find_local": "cotkit.data",
    "resolve_data_dir": "cotkit.data",
    # reading answers out of model text
    "Extraction": "cotkit.reading.answers",
    "Number": "cotkit.reading.answers",
    "extract_answer": "cotkit.reading.answers",
    "cut_completion": "cotkit.reading.answers",
    "trim_after_answer": "cotkit.reading.answers",
    "last_number": "cotkit.reading.answers",
    "last_boxed": "cotkit.reading.answers",
    "parse_number": "cotkit.reading.answers",
    "parse_gold_number": "cotkit.reading.answers",
    "format_number": "cotkit.reading.answers",
    "numbers_equal": "cotkit.reading.answers",
    "canonical_numeral": "cotkit.reading.answers",
    "numeral_size": "cotkit.reading.answers",
    "digit_limit": "cotkit.reading.answers",
    "normalize_label": "cotkit.reading.answers",
    "normalize_text": "cotkit.reading.answers",
    "normalize_math": "cotkit.reading.answers",
    "open_text_equal": "cotkit.reading.answers",
    "extract_math_answer": "cotkit.reading.latex",
    "normalize_answer": "cotkit.reading.latex",
    "answer_structure": "cotkit.reading.latex",
    "form_problem": "cotkit.reading.latex",
    "question_wants_order": "cotkit.reading.latex",
    "is_plain_number": "cotkit.reading.latex",
    "is_words": "cotkit.reading.latex",
    "TEXT_UNITS": "cotkit.reading.steps",
    "split_text": "cotkit.reading.steps",
    "split_program": "cotkit.reading.steps",
    "program_source": "cotkit.reading.steps",
    # running untrusted model code
    "Sandbox": "cotkit.sandbox",
    "Job": "cotkit.sandbox",
    "Limits": "cotkit.sandbox",
    "Outcome": "cotkit.sandbox",
    "requested_isolation": "cotkit.sandbox.isolation",
    "WorkerPool": "cotkit.reading.timelimit",
    "TimeLimitExceeded": "cotkit.reading.timelimit",
    "WorkerCrashed": "cotkit.reading.timelimit",
    "WorkerFailed": "cotkit.reading.timelimit",
    # errors (a CotkitError is one line for the user, exit code 2 for bad input)
    "CotkitError": "cotkit.errors",
    "ConfigError": "cotkit.errors",
    "DataError": "cotkit.errors",
    "ModelError": "cotkit.errors",
    "UnknownNameError": "cotkit.errors",
    "first_line": "cotkit.errors",
    # API keys and terminal output
    "check_key_env_name": "cotkit.apikeys",
    "refuse_secrets_in_options": "cotkit.apikeys",
    "scrub_key": "cotkit.apikeys",
    "scrub_and_shorten": "cotkit.apikeys",
    "err": "cotkit.console",
    "quiet_transformers": "cotkit.console",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cotkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # editors and type checkers see the real definitions
    from cotkit.reading.answers import (
        Extraction,
        Number,
        canonical_numeral,
        cut_completion,
        digit_limit,
        extract_answer,
        format_number,
        last_boxed,
        last_number,
        normalize_label,
        normalize_math,
        normalize_text,
        numbers_equal,
        numeral_size,
        open_text_equal,
        parse_gold_number,
        parse_number,
        trim_after_answer,
    )
    from cotkit.apikeys import check_key_env_name, refuse_secrets_in_options, scrub_and_shorten, scrub_key
    from cotkit.options import option
    from cotkit.console import err, quiet_transformers
    from cotkit.contracts import (
        HINT_FORMATS,
        PROMPT_STYLES,
        SEED_MASK,
        Backend,
        Generation,
        Method,
        SamplingParams,
        StepScorer,
        Task,
        Verifier,
        check_styles,
        hint_format,
        require_fields,
        sample_seed,
    )
    from cotkit.data import find_local, load_rows, read_json, resolve_data_dir
    from cotkit.errors import ConfigError, CotkitError, DataError, ModelError, UnknownNameError, first_line
    from cotkit.harness.evaluate import evaluate
    from cotkit.harness.iterate import (
        ModelSlot,
        SplitLimits,
        Splits,
        capped_steps,
        eval_phases,
        fine_tune,
        greedy_accuracy,
        method_splits,
        phase_seconds,
        prune_checkpoints,
    )
    from cotkit.harness.online import OnlineObjective
    from cotkit.harness.preference import DPONLLObjective, PreferencePair
    from cotkit.harness.sample import accepts_seeds, example_seed, merge_stops, sample
    from cotkit.harness.seq2seq import is_encoder_decoder
    from cotkit.harness.softprompt import with_soft_prompt
    from cotkit.harness.stepsearch import BeamBackend, BeamSettings, make_step_scorer, prompt_key
    from cotkit.harness.teacher_cache import CachedTeacher, TeacherCache
    from cotkit.harness.train import (
        LossFnObjective,
        Objective,
        SFTConfig,
        TrainExample,
        WeightedSFT,
        completion_ids,
        render_prompt_ids,
    )
    from cotkit.harness.verify import make_verifier, sample_row, summarize, verify_samples
    from cotkit.hookspecs import hookimpl
    from cotkit.jsonl import append_jsonl_rows, atomic_write_jsonl, read_jsonl, read_jsonl_tolerant
    from cotkit.reading.latex import (
        answer_structure,
        extract_math_answer,
        form_problem,
        is_plain_number,
        is_words,
        normalize_answer,
        question_wants_order,
    )
    from cotkit.models import cache_kwarg, load_backend, resolve_model, write_backend_file
    from cotkit.plugins import load_task
    from cotkit.rewards import StepScorerReward, VerifierReward, reward_rows
    from cotkit.run import RunContext, is_main_process
    from cotkit.sandbox import Job, Limits, Outcome, Sandbox
    from cotkit.sandbox.isolation import requested_isolation
    from cotkit.stats import wilson_interval
    from cotkit.reading.steps import TEXT_UNITS, program_source, split_program, split_text
    from cotkit.reading.timelimit import TimeLimitExceeded, WorkerCrashed, WorkerFailed, WorkerPool
    from cotkit.types import AnswerKind, Choice, Example, Message, Prompt, Sample, Status, Verdict
