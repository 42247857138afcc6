"""Parity with lm-eval: run one of lm-eval's own tasks on the same model, rescore its completions with cotkit.

With a local data directory the built-in task's hub dataset is replaced by the cotkit task's rows
(the publishers' format is the hub's), so the comparison runs offline on the same examples.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any

from cotkit.contracts import Backend, Task
from cotkit.errors import CotkitError
from cotkit.jsonl import jsonl_text
from cotkit.outputs import save_files


def find_builtin_yaml(name: str) -> Path:
    """The YAML of an lm-eval built-in task, found by its `task:` line (indexing every task takes ~25 s)."""
    import lm_eval

    root = Path(lm_eval.__file__).parent / "tasks"
    pattern = re.compile(rf"^task:\s*['\"]?{re.escape(name)}['\"]?\s*$", re.M)
    for path in root.rglob("*.yaml"):
        try:
            if pattern.search(path.read_text(encoding="utf-8", errors="ignore")):
                return path
        except OSError:
            continue
    raise CotkitError(f"--lm-eval-task {name}: no such lm-eval built-in task (lm_eval {lm_eval.__version__ if hasattr(lm_eval, '__version__') else ''})")


def _local_dataset(task: Task, splits: list[str], **_: Any) -> dict[str, Any]:
    import datasets

    return {s: datasets.Dataset.from_list(task.rows(s) if hasattr(task, "rows") else []) for s in splits}


def load_builtin(name: str, task: Task) -> Any:
    """The lm-eval task object, its dataset taken from the cotkit task when a data directory is set."""
    from lm_eval.tasks import TaskManager

    path = find_builtin_yaml(name)
    tm = TaskManager(include_path=str(path.parent), include_defaults=False)
    if task.data_dir is None:
        return tm.load([name])["tasks"][name]
    # Private API: the fully resolved config (includes expanded); then swap in our data.
    cfg = dict(tm._factory._load_full_config(tm.task_index[name]))
    splits = [s for s in {cfg.get(k) for k in ("test_split", "validation_split", "training_split", "fewshot_split")}
              if s and s in task.splits]
    if cfg.get("test_split") not in splits:
        raise CotkitError(f"--lm-eval-task {name}: its test split {cfg.get('test_split')!r} is not a split of {task.full_name}")
    cfg["custom_dataset"] = partial(_local_dataset, task, splits)
    for key in ("validation_split", "training_split", "fewshot_split"):
        if cfg.get(key) and cfg[key] not in splits:
            cfg[key] = None
    return tm.load([cfg])["tasks"][name]


def compare(name: str, task: Task, backend: Backend, settings: Any, output_dir: Path | None, *, verbose: bool = False) -> dict[str, Any]:
    """lm-eval's accuracy with its own prompt and scoring, cotkit's verdicts on the same completions, and disagreements."""
    from cotkit.lmeval.quiet import quiet_lm_eval

    with quiet_lm_eval(verbose):
        return _compare(name, task, backend, settings, output_dir)


def _compare(name: str, task: Task, backend: Backend, settings: Any, output_dir: Path | None) -> dict[str, Any]:
    import lm_eval

    from cotkit.harness.verify import make_verifier, verify_samples
    from cotkit.lmeval.model import CotkitLM
    from cotkit.types import Sample

    obj = load_builtin(name, task)
    if obj.get_config("output_type") != "generate_until":
        raise CotkitError(f"--lm-eval-task {name} scores log-likelihoods, not generated chains of thought; pick a *_cot task")
    lm = CotkitLM(backend, seed=settings.seed, max_new_tokens=settings.max_new_tokens)
    results = lm_eval.simple_evaluate(model=lm, tasks=[obj], limit=settings.limit, log_samples=True,
                                      bootstrap_iters=0, random_seed=settings.seed, verbosity="ERROR")
    logged = results["samples"][name]
    # lm-eval logs one row per (document, filter); each filter is its own answer extraction.
    filters = sorted({s.get("filter", "none") for s in logged})
    metric = next(k.split(",")[0] for k in results["results"][name]
                  if "," in k and not k.split(",")[0].endswith("_stderr"))
    first = [s for s in logged if s.get("filter", "none") == filters[0]]
    verifier = make_verifier(settings.verifier, task)
    try:
        samples = []
        for s in first:
            example = task.example_from_row(s["doc"], int(s["doc_id"]))
            resp = s["resps"][0]
            samples.append(Sample(example=example, completion=resp[0] if isinstance(resp, list) else resp,
                                  stop=task.stop_sequences("fewshot")))
        verdicts = verify_samples(samples, verifier)
    finally:
        verifier.close()
    ours = {int(s["doc_id"]): v.correct for s, v in zip(first, verdicts)}
    per_filter = {}
    for f in filters:
        theirs = {int(s["doc_id"]): float(s[metric]) >= 1.0 for s in logged if s.get("filter", "none") == f}
        per_filter[f] = {
            "accuracy": sum(theirs.values()) / max(1, len(theirs)),
            "disagreements": sum(theirs[d] != ours[d] for d in theirs),
        }
    if output_dir is not None:
        save_files(output_dir, {"parity.jsonl": jsonl_text([
            {"doc_id": s["doc_id"], "completion": smp.completion, **v.to_dict(),
             "lm_eval": {r.get("filter", "none"): {"correct": float(r[metric]) >= 1.0, "extracted": r.get("filtered_resps")}
                         for r in logged if r["doc_id"] == s["doc_id"]}}
            for s, smp, v in zip(first, samples, verdicts)
        ])}, "--output-dir")
    n = len(first)
    main_filter = filters[0]
    return {
        "lm_eval_task": name,
        "lm_eval_metric": f"{metric},{main_filter}",
        "n": n,
        "lm_eval_accuracy": per_filter[main_filter]["accuracy"],
        "cotkit_accuracy": sum(ours.values()) / n if n else 0.0,
        "disagreements": per_filter[main_filter]["disagreements"],
        "filters": per_filter,
    }
