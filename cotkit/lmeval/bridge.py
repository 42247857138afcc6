"""Functions lm-eval task YAMLs call: the dataset, the prompt, and scoring with a cotkit verifier.

The YAMLs in `cotkit_tasks/lm_eval/` name a cotkit task in their metadata; lm-eval passes that
metadata (merged with runtime metadata such as the data directory and prompt style) to `dataset`.
Each document carries everything `process_results` needs, so scoring uses the same loader and the
same verifier as `cotkit score` and training.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from cotkit.harness.verify import answer_key, majority

#: Prefix marking a doc text that holds chat messages as JSON; cotkit's lm-eval model decodes it.
CHAT_PREFIX = "\x00cotkit-chat:"

_lock = threading.Lock()
_tasks: dict[tuple, Any] = {}
_verifiers: dict[tuple, Any] = {}
_scorers: dict[tuple, Any] = {}
#: Per-sample records of the current evaluation, keyed by task spec, for the per-sample JSONL.
RECORDS: dict[str, list[dict[str, Any]]] = {}


def _task(spec: str, data_dir: str | None, options: dict[str, Any]):
    key = (spec, data_dir, json.dumps(options, sort_keys=True))
    with _lock:
        if key not in _tasks:
            from cotkit.data import resolve_data_dir
            from cotkit.plugins import host

            _tasks[key] = host().task(spec, data_dir=resolve_data_dir(data_dir), **options)
        return _tasks[key]


def _verifier(name: str, task):
    key = (name, task.full_name)
    with _lock:
        if key not in _verifiers:
            from cotkit.harness.verify import make_verifier

            _verifiers[key] = make_verifier(name, task)
        return _verifiers[key]


def _step_scorer(name: str, options_json: str):
    key = (name, options_json)
    with _lock:
        if key not in _scorers:
            from cotkit.harness.stepsearch import make_step_scorer

            _scorers[key] = make_step_scorer(name, **json.loads(options_json or "{}"))
        return _scorers[key]


def close_all() -> None:
    """Close cached verifiers and step scorers (worker pools, models) and forget cached tasks and records."""
    with _lock:
        for v in [*_verifiers.values(), *_scorers.values()]:
            v.close()
        _verifiers.clear()
        _scorers.clear()
        _tasks.clear()
        RECORDS.clear()


def build_docs(
    cotkit_task: str,
    cotkit_split: str | None = None,
    cotkit_style: str = "fewshot",
    cotkit_data_dir: str | None = None,
    cotkit_verifier: str | None = None,
    cotkit_task_options: dict[str, Any] | None = None,
    cotkit_limit: int | None = None,
    cotkit_rerank: str | None = None,
    cotkit_scorer_options: dict[str, Any] | None = None,
    cotkit_aggregate: str = "min",
) -> list[dict[str, Any]]:
    """The lm-eval documents of a cotkit task split: rendered prompt plus the raw publisher row.

    With `cotkit_rerank` (a step scorer), every document also names the scorer, its options and
    the aggregation, so `process_results` reranks the samples of each question.
    """
    data_dir = cotkit_data_dir or os.environ.get("COTKIT_DATA_DIR") or None
    options = dict(cotkit_task_options or {})
    task = _task(cotkit_task, data_dir, options)
    split = cotkit_split or task.eval_split
    verifier = cotkit_verifier or task.default_verifier
    docs = []
    for ex in task.examples(split, limit=cotkit_limit):
        prompt = task.prompt(ex, style=cotkit_style)
        docs.append(
            {
                "cotkit_task": ex.task or cotkit_task,
                "cotkit_group": cotkit_task,
                "cotkit_data_dir": data_dir or "",
                "cotkit_options": json.dumps(options),
                "cotkit_verifier": verifier,
                "cotkit_style": cotkit_style,
                "id": ex.id,
                "prompt": prompt if isinstance(prompt, str) else CHAT_PREFIX + json.dumps(prompt),
                "target": ex.answer,
                "raw": json.dumps(ex.raw, ensure_ascii=False),
                "cotkit_rerank": cotkit_rerank or "",
                "cotkit_scorer_options": json.dumps(cotkit_scorer_options or {}, sort_keys=True),
                "cotkit_aggregate": cotkit_aggregate,
            }
        )
    return docs


def dataset(**metadata: Any) -> dict[str, Any]:
    """lm-eval `custom_dataset`: {"test": Dataset} built from cotkit's loader."""
    import datasets

    keys = ("cotkit_task", "cotkit_split", "cotkit_style", "cotkit_data_dir", "cotkit_verifier",
            "cotkit_task_options", "cotkit_limit", "cotkit_rerank", "cotkit_scorer_options", "cotkit_aggregate")
    docs = build_docs(**{k: metadata[k] for k in keys if metadata.get(k) not in (None, "")})
    return {"test": datasets.Dataset.from_list(docs)}


def doc_to_text(doc: dict[str, Any]) -> str:
    """The prompt; chat prompts travel as JSON behind CHAT_PREFIX for cotkit's model wrapper."""
    return doc["prompt"]


def doc_to_target(doc: dict[str, Any]) -> str:
    """The gold answer string."""
    return doc["target"]


def keep_all(resps: Any, docs: Any) -> Any:
    """lm-eval filter: keep every sampled response of a document (the default keeps the first)."""
    return resps


def example_of(doc: dict[str, Any]):
    """The cotkit Example a document was built from."""
    task = _task(doc["cotkit_task"], doc["cotkit_data_dir"] or None, json.loads(doc["cotkit_options"]))
    example = task.example_from_row(json.loads(doc["raw"]), 0)
    example.id = doc["id"]
    return example


def rerank(doc: dict[str, Any], example: Any, results: list[str], verdicts: list[Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Score every sample's steps with the document's step scorer; pick best-of-N and the weighted vote.

    Adds `steps`, `step_scores` and `solution_score` to each completion row; returns the indices
    of the top-scored sample and of the weighted vote's representative (for the record).
    """
    from cotkit.harness.stepsearch import best_of_n, score_solutions, weighted_vote

    scorer = _step_scorer(doc["cotkit_rerank"], doc.get("cotkit_scorer_options", "{}"))
    scored = score_solutions(scorer, example, results, doc.get("cotkit_aggregate") or "min")
    for row, s in zip(rows, scored):
        row.update(s.to_dict())
    weights = [s.score for s in scored]
    return {"best_of_n": best_of_n(weights), "weighted_vote": weighted_vote([answer_key(v) for v in verdicts], weights)}


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """Verify each completion with the cotkit verifier: mean accuracy, majority-vote accuracy, unparseable rate."""
    from cotkit.harness.verify import verify_samples
    from cotkit.types import Sample, Status

    if results and isinstance(results[0], list):  # the keep_all filter hands over all samples at once
        results = results[0]
    task = _task(doc["cotkit_task"], doc["cotkit_data_dir"] or None, json.loads(doc["cotkit_options"]))
    example = example_of(doc)
    row = json.loads(doc["raw"])
    stop = task.stop_sequences(doc["cotkit_style"])
    samples = [Sample(example=example, completion=r, stop=stop) for r in results]
    verdicts = verify_samples(samples, _verifier(doc["cotkit_verifier"], task))
    correct = [v.status is Status.CORRECT for v in verdicts]
    voted = majority(verdicts)
    record = {
        "id": doc["id"],
        "task": doc["cotkit_task"],
        "prompt": doc["prompt"][len(CHAT_PREFIX):] if doc["prompt"].startswith(CHAT_PREFIX) else doc["prompt"],
        "target": doc["target"],
        "raw": row,
        "completions": [
            {"completion": r, **v.to_dict()} for r, v in zip(results, verdicts)
        ],
        "majority": voted,
    }
    if doc.get("cotkit_rerank"):
        record.update(rerank(doc, example, results, verdicts, record["completions"]))
    with _lock:
        RECORDS.setdefault(doc["cotkit_group"], []).append(record)
    return {
        "acc": sum(correct) / len(correct),
        "maj": float(voted is not None and correct[voted]),
        "unparseable": sum(v.status is Status.UNPARSEABLE for v in verdicts) / len(verdicts),
    }
