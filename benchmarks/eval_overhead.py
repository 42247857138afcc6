"""`cotkit eval` overhead against calling `lm_eval.simple_evaluate` directly, measured side by side.

Both paths use the same model object (one cotkit backend wrapped as an lm-eval LM) and the same
prompts for the same examples, greedy, so they generate identical text; what differs is cotkit's
part: building documents from the task loader, scoring every completion with the cotkit verifier,
and writing results.json and samples.jsonl. The baseline is a plain lm-eval task over the same
prompts scored with lm-eval's regex filter and exact_match.

    python benchmarks/eval_overhead.py --data-dir ../shared/data [--model smollm2-135m] [--limit 20]

Runs alternate (baseline, cotkit, baseline, cotkit, ...) and the minimum of each is compared.
Because this machine is shared, the script reports process CPU time as well as wall time, and
splits each run into time inside the backend's `generate` (identical work in both paths) and the
rest (what each harness adds).
"""

from __future__ import annotations

import argparse
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="gsm8k")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import datasets
    import lm_eval

    from cotkit.lmeval import bridge
    from cotkit.lmeval.model import CotkitLM
    from cotkit.lmeval.runner import EvalSettings, _silence_lm_eval, evaluate
    from cotkit.models import load_backend
    from cotkit.plugins import host

    _silence_lm_eval()
    task = host().task(args.task, data_dir=args.data_dir)
    backend = load_backend("hf", model=args.model)
    spent = {"generate": 0.0}
    inner_generate = backend.generate

    def timed_generate(*a, **kw):
        start = time.process_time()
        try:
            return inner_generate(*a, **kw)
        finally:
            spent["generate"] += time.process_time() - start

    backend.generate = timed_generate
    lm = CotkitLM(backend, max_new_tokens=args.max_new_tokens, progress=False)
    docs = bridge.build_docs(args.task, cotkit_data_dir=args.data_dir, cotkit_limit=args.limit)
    stops = task.stop_sequences("fewshot")
    baseline_cfg = {
        "task": "baseline_plain_lm_eval",
        "custom_dataset": lambda **_: {"test": datasets.Dataset.from_list(docs)},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{target}}",
        "generation_kwargs": {"until": stops, "do_sample": False, "max_gen_toks": args.max_new_tokens},
        "filter_list": [{"name": "strict", "filter": [
            {"function": "regex", "regex_pattern": r"The answer is (\-?[0-9\.\,]+)."}, {"function": "take_first"}]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
        "num_fewshot": 0,
    }

    def measured(run) -> dict[str, float]:
        spent["generate"] = 0.0
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        cpu = time.process_time() - cpu
        return {"wall": time.perf_counter() - wall, "cpu": cpu, "generate": spent["generate"], "rest": cpu - spent["generate"]}

    def baseline() -> None:
        lm_eval.simple_evaluate(model=lm, tasks=[dict(baseline_cfg)], limit=args.limit, bootstrap_iters=1000,
                                log_samples=False, verbosity="ERROR")

    def cotkit_eval() -> None:
        settings = EvalSettings(limit=args.limit, max_new_tokens=args.max_new_tokens, data_dir=args.data_dir)
        with tempfile.TemporaryDirectory() as out:
            evaluate(task, backend, settings, out)

    runs: dict[str, list[dict[str, float]]] = {"lm_eval.simple_evaluate directly": [], "cotkit eval path": []}
    for _ in range(args.repeats):
        runs["lm_eval.simple_evaluate directly"].append(measured(baseline))
        runs["cotkit eval path"].append(measured(cotkit_eval))
    print(f"model {args.model}, task {args.task}, {args.limit} examples, max {args.max_new_tokens} new tokens")
    best = {}
    for name, rs in runs.items():
        best[name] = {k: min(r[k] for r in rs) for k in rs[0]}
        b = best[name]
        print(f"{name:34s} wall {b['wall']:7.1f}s  cpu {b['cpu']:7.1f}s  (generate {b['generate']:7.1f}s, rest {b['rest']:5.1f}s)")
    base, ours = best["lm_eval.simple_evaluate directly"], best["cotkit eval path"]
    print(f"overhead, CPU time: {100 * (ours['cpu'] - base['cpu']) / base['cpu']:+.1f}%   "
          f"wall time: {100 * (ours['wall'] - base['wall']) / base['wall']:+.1f}%  (target: at most +10%)")
    print(f"time outside generation: cotkit {ours['rest']:.1f}s vs lm-eval {base['rest']:.1f}s "
          f"(= {100 * (ours['rest'] - base['rest']) / base['cpu']:+.1f}% of the direct run's CPU time)")


if __name__ == "__main__":
    main()
