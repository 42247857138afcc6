"""Run cotkit tasks (or lm-eval's own tasks, for parity) through `lm_eval.simple_evaluate`."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from cotkit.contracts import Backend, Task
from cotkit.errors import ConfigError, CotkitError
from cotkit.harness.stepsearch import AGGREGATES, BEAM_AGGREGATES, BeamSettings
from cotkit.options import option


def yaml_dir() -> Path:
    """The folder of cotkit's lm-eval task YAMLs (usable as lm-eval's --include_path)."""
    return Path(str(resources.files("cotkit_tasks") / "lm_eval"))


def lm_eval_task_name(spec: str) -> str:
    """The lm-eval task name of a cotkit task string: `bbh:date_understanding` -> `cotkit_bbh_date_understanding`."""
    return "cotkit_" + spec.replace(":", "_").replace("-", "_")


def _beam_option(name: str) -> Any:
    """A field with the default and help of `BeamSettings.<name>`, so both are written once, there."""
    beam_field = next(f for f in fields(BeamSettings) if f.name == name)
    return field(default=beam_field.default, metadata=beam_field.metadata)


@dataclass
class EvalSettings:
    """What `cotkit eval` evaluates and how.

    The command's options are these fields, so their defaults are written here only. So is their
    help, except for the options every sampling command shares (`--limit`, `--seed`, ...), whose help
    is the command line's vocabulary (`cotkit.cli.options`).
    """

    style: str = "fewshot"
    split: str | None = option(None, help="Split (default: the task's standard evaluation split, usually test).")
    limit: int | None = None
    n: int = option(1, help="Samples per question (self-consistency with --vote majority).")
    vote: str | None = option(None, help="'majority': report maj@n as the accuracy.")
    temperature: float | None = option(None, help="Default 0 (greedy), or 0.7 when --n > 1.")
    top_p: float = 1.0
    max_new_tokens: int = 256
    verifier: str | None = None
    seed: int = 0
    data_dir: str | None = None
    task_options: dict[str, Any] = field(default_factory=dict)
    bootstrap_iters: int = 1000
    rerank: str | None = option(
        None, help="Step scorer (arith, exec, prm, faithfulness, a plugin's) reranking the --n samples: adds best-of-N and weighted-vote accuracy."
    )
    aggregate: str = option(
        "min", help="Step scores to a solution score: min, prod or last; with --search beam also logsum (PaD's sum of log scores)."
    )
    search: str | None = option(None, help="'beam': step-level beam search decoding scored by --step-scorer.")
    step_scorer: str | None = option(None, help="Step scorer guiding --search beam (arith, exec, prm, faithfulness, a plugin's).")
    #: Options of the step scorers (--scorer-option KEY=VALUE).
    scorer_options: dict[str, Any] = field(default_factory=dict)
    beam_width: int = _beam_option("beam_width")
    beam_expand: int = _beam_option("expand")
    max_steps: int = _beam_option("max_steps")
    step_tokens: int = _beam_option("step_tokens")
    logprob_weight: float = _beam_option("logprob_weight")
    logprob_reduce: str = _beam_option("logprob_reduce")
    length_penalty: float = _beam_option("length_penalty")

    def __post_init__(self) -> None:
        allowed = BEAM_AGGREGATES if self.search else AGGREGATES
        if self.aggregate not in allowed:
            raise ConfigError(f"--aggregate {self.aggregate!r}: expected one of {', '.join(allowed)}")
        if self.search not in (None, "beam"):
            raise ConfigError(f"--search {self.search!r}: only 'beam' is supported")
        if self.search and not self.step_scorer:
            raise ConfigError("--search beam needs --step-scorer NAME (e.g. arith, exec, prm, faithfulness)")
        if self.step_scorer and not self.search:
            raise ConfigError("--step-scorer scores beam search steps: add --search beam (or use --rerank to rerank samples)")
        if self.rerank and self.n < 2:
            raise ConfigError("--rerank picks among several samples per question: use --n 2 or more")
        if self.search and self.n > self.beam_width:
            raise ConfigError(f"--n {self.n} is more than --beam-width {self.beam_width}: beam search returns at most that many")

    def beam_settings(self) -> Any:
        """The beam search settings (temperature, budget and seed come from the sampling settings)."""
        return BeamSettings(
            beam_width=self.beam_width, expand=self.beam_expand, max_steps=self.max_steps, step_tokens=self.step_tokens,
            max_new_tokens=self.max_new_tokens, top_p=self.top_p, aggregate=self.aggregate,
            logprob_weight=self.logprob_weight, logprob_reduce=self.logprob_reduce, length_penalty=self.length_penalty,
            seed=self.seed,
        )  # fmt: skip


def _metric(res: dict[str, Any], key: str) -> float | None:
    value = res.get(f"{key},none")
    if value is None or value == "N/A":
        return None
    value = float(value)
    return None if math.isnan(value) else value


def evaluate(
    task: Task, backend: Backend, settings: EvalSettings, output_dir: Path | None = None, *, verbose: bool = False
) -> dict[str, Any]:
    """Evaluate one cotkit task with lm-eval; write results.json and samples.jsonl; return the summary.

    lm-eval's own logging and progress bars are shown only when `verbose`.
    """
    from cotkit.lmeval.quiet import quiet_lm_eval

    with quiet_lm_eval(verbose):
        return _evaluate(task, backend, settings, output_dir, verbose)


def _evaluate(task: Task, backend: Backend, settings: EvalSettings, output_dir: Path | None, verbose: bool) -> dict[str, Any]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    from cotkit.lmeval import bridge
    from cotkit.lmeval.model import CotkitLM

    name = lm_eval_task_name(task.full_name)
    folders = [str(yaml_dir()), *([task.lm_eval_yamls] if task.lm_eval_yamls else [])]  # a plugin package's own
    tm = TaskManager(include_path=folders, include_defaults=False, metadata=_runtime_metadata(task, settings))
    if name not in tm.all_tasks:
        raise CotkitError(f"task {task.full_name} has no lm-eval definition {name} in {' or '.join(folders)}")
    sampling = settings.n > 1 or settings.search is not None  # beam search samples its candidate steps
    temperature = settings.temperature if settings.temperature is not None else (0.7 if sampling else 0.0)
    gen = {"until": task.stop_sequences(settings.style), "max_gen_toks": settings.max_new_tokens,
           "do_sample": temperature > 0, "temperature": temperature, "top_p": settings.top_p}
    names = [lm_eval_task_name(f"{task.name}:{sub}") for sub in task.subsets] if task.group and task.subset is None else [name]
    # Load by name (a dict spec would replace the YAML, not override it), then adjust the configs.
    loaded = list(tm.load(names)["tasks"].values())
    for obj in loaded:
        obj.set_config(key="repeats", value=settings.n)
        obj.set_config(key="generation_kwargs", value=gen, update=True)
    searcher = _beam_backend(task, backend, settings) if settings.search == "beam" else None
    lm = CotkitLM(searcher or backend, seed=settings.seed, max_new_tokens=settings.max_new_tokens)
    bridge.RECORDS.clear()
    started = time.perf_counter()
    try:
        results = lm_eval.simple_evaluate(
            model=lm, tasks=loaded, task_manager=tm, limit=settings.limit, log_samples=False,
            bootstrap_iters=settings.bootstrap_iters, random_seed=settings.seed, verbosity="INFO" if verbose else "ERROR",
        )
        records = [r for group in bridge.RECORDS.values() for r in group]
    finally:
        bridge.close_all()
        if searcher is not None:
            searcher.scorer.close()
    if searcher is not None:  # each completion's beam: steps, step scores, beam score, why it ended
        traces = {prompt: [beam.to_dict(searcher.settings) for beam in beams] for prompt, beams in searcher.traces.items()}
        _attach(records, traces, "search")
    _attach(records, lm.generation_meta, "meta")  # what a backend said beyond the text (a Quiet-STaR checkpoint's thoughts)
    elapsed = time.perf_counter() - started
    summary = summarize(task.full_name, results, records, settings)
    summary.update({"backend": backend.name, "model": backend.model_name, "seconds": round(elapsed, 2)})
    if output_dir is not None:
        write_outputs(Path(output_dir), results, records, summary)
    return summary


def _beam_backend(task: Task, backend: Backend, settings: EvalSettings) -> Any:
    """The backend wrapped in step-level beam search, its scorer told the Example behind each prompt."""
    from cotkit.harness.stepsearch import BeamBackend, make_step_scorer, prompt_key
    from cotkit.lmeval import bridge

    scorer = make_step_scorer(settings.step_scorer, **settings.scorer_options)
    specs = [f"{task.name}:{sub}" for sub in task.subsets] if task.group and task.subset is None else [task.full_name]
    data_dir = settings.data_dir or (str(task.data_dir) if task.data_dir else None)
    examples = {}
    for spec in specs:
        for doc in bridge.build_docs(spec, settings.split, settings.style, data_dir, None, settings.task_options, settings.limit):
            prompt = doc["prompt"]
            examples[prompt.removeprefix(bridge.CHAT_PREFIX)] = bridge.example_of(doc)
    return BeamBackend(backend, scorer, settings.beam_settings(), example_of=lambda p: examples.get(prompt_key(p)))


def _attach(records: list[dict[str, Any]], by_prompt: dict[str, list[Any]], field: str) -> None:
    """Put the entries recorded for each prompt (one per sample, in sample order) into its completions' rows under `field`."""
    for rec in records:
        for row, entry in zip(rec["completions"], by_prompt.get(rec["prompt"], [])):
            row[field] = entry


def _runtime_metadata(task: Task, settings: EvalSettings) -> dict[str, Any]:
    meta: dict[str, Any] = {"cotkit_style": settings.style}
    if settings.data_dir:
        meta["cotkit_data_dir"] = str(settings.data_dir)
    elif task.data_dir:
        meta["cotkit_data_dir"] = str(task.data_dir)
    if settings.verifier:
        meta["cotkit_verifier"] = settings.verifier
    if settings.split:
        meta["cotkit_split"] = settings.split
    if settings.task_options:
        meta["cotkit_task_options"] = settings.task_options
    if settings.rerank:
        meta.update(cotkit_rerank=settings.rerank, cotkit_scorer_options=settings.scorer_options, cotkit_aggregate=settings.aggregate)
    return meta


def summarize(task_name: str, results: dict[str, Any], records: list[dict[str, Any]], settings: EvalSettings) -> dict[str, Any]:
    """The summary `cotkit eval` prints: accuracy with standard error, n, the counts of unparseable,
    timeout and error verdicts and the accuracy of parsed answers.

    Accuracy is lm-eval's mean over the n questions of each question's share of correct completions:
    every completion counts, an `error` or `timeout` one as not correct (`bridge.process_results`).
    """
    per_task = {k: v for k, v in results["results"].items() if k.startswith("cotkit_")}
    n_total = sum(int(results["n-samples"][k]["effective"]) for k in per_task)
    correct_mean = sum(_metric(v, "acc") * int(results["n-samples"][k]["effective"]) for k, v in per_task.items())
    acc = correct_mean / n_total if n_total else 0.0
    key = "maj" if settings.vote == "majority" else "acc"
    headline = sum((_metric(v, key) or 0.0) * int(results["n-samples"][k]["effective"]) for k, v in per_task.items())
    headline = headline / n_total if n_total else 0.0
    unparseable = sum((_metric(v, "unparseable") or 0.0) * int(results["n-samples"][k]["effective"]) for k, v in per_task.items())
    summary: dict[str, Any] = {
        "task": task_name,
        "n": n_total,
        "accuracy": headline,
        # binomial standard error over the n questions (for one task this equals lm-eval's mean stderr up to n/(n-1))
        "stderr": math.sqrt(headline * (1 - headline) / (n_total - 1)) if n_total > 1 else 0.0,
        "unparseable": unparseable / n_total if n_total else 0.0,
        "style": settings.style,
        "samples_per_question": settings.n,
    }
    summary.update(verdict_counts(records))
    if settings.n > 1:
        summary["mean_accuracy"] = acc
        summary[f"maj@{settings.n}"] = sum((_metric(v, "maj") or 0.0) * int(results["n-samples"][k]["effective"])
                                           for k, v in per_task.items()) / max(1, n_total)
    if settings.rerank:
        summary["rerank"] = {
            "step_scorer": settings.rerank, "aggregate": settings.aggregate,
            "best_of_n": _picked_accuracy(records, "best_of_n"), "weighted_vote": _picked_accuracy(records, "weighted_vote"),
        }  # fmt: skip
    if settings.search:
        summary["search"] = {
            "method": settings.search, "step_scorer": settings.step_scorer, "beam_width": settings.beam_width,
            "expand": settings.beam_expand, "max_steps": settings.max_steps, "aggregate": settings.aggregate,
            "logprob_weight": settings.logprob_weight,
        }  # fmt: skip
    if len(per_task) > 1:
        summary["subtasks"] = {
            k.removeprefix("cotkit_"): {"n": int(results["n-samples"][k]["effective"]), "accuracy": _metric(v, key)}
            for k, v in per_task.items()
        }
    return summary


def verdict_counts(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of the verdicts that are not a judged answer, over every completion, and the accuracy
    of the parsed ones: shown beside an accuracy that counts all of them as not correct."""
    statuses = [c.get("verdict") for rec in records for c in rec["completions"]]
    correct, incorrect = statuses.count("correct"), statuses.count("incorrect")
    return {
        "completions": len(statuses),
        "correct_completions": correct,
        "accuracy_parsed": correct / (correct + incorrect) if correct + incorrect else None,
        "unparseable_count": statuses.count("unparseable"),
        "timeouts": statuses.count("timeout"),
        "errors": statuses.count("error"),
    }


def _picked_accuracy(records: list[dict[str, Any]], key: str) -> float:
    """Accuracy of the sample each question's record picked under `key` (a question with no pick counts as wrong)."""
    if not records:
        return 0.0
    hits = 0
    for rec in records:
        i = rec.get(key)
        hits += bool(i is not None and rec["completions"][i].get("correct"))
    return hits / len(records)


def write_outputs(output_dir: Path, results: dict[str, Any], records: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """results.json (lm-eval's results plus cotkit's summary) and samples.jsonl (one row per completion).

    Both are built before either is written; a failed write keeps both in a fallback folder named in the error.
    """
    from cotkit.jsonl import json_text, jsonl_text
    from cotkit.outputs import save_files

    clean = json.loads(json.dumps({k: v for k, v in results.items() if k != "samples"}, default=str))
    rows = []
    for rec in records:
        for i, c in enumerate(rec["completions"]):
            rows.append({"id": rec["id"], "task": rec["task"], "sample_index": i, "prompt": rec["prompt"],
                         "target": rec["target"], **rec["raw"], **c, "majority_vote": rec["majority"] == i,
                         **({"best_of_n": rec["best_of_n"] == i, "weighted_vote": rec["weighted_vote"] == i} if "best_of_n" in rec else {})})
    files = {"results.json": json_text({"cotkit": summary, "lm_eval": clean}), "samples.jsonl": jsonl_text(rows)}
    save_files(output_dir, files, "--output-dir")
