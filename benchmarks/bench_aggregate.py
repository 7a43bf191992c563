"""Re-scoring cost of `rstar-jax aggregate` with the real grader.

Builds P problems with K candidate answers each, drawn from a few LaTeX
spellings of the same values (the shape of MCTS+PPM outputs: many repeats,
a handful of equivalence classes), and times:

  baseline  grade every candidate against the gold answer, one
            `grading.grade` call each (what pass@k alone costs naively);
  ours      `metrics.aggregate`: first, maj@K, best@K, weighted@K and pass@K,
            with per-problem grading cache and class grouping.

Usage: PYTHONPATH=. python benchmarks/bench_aggregate.py [--problems 200] [--k 8,64]
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from rstar_jax.evaluation import metrics
from rstar_jax.execution import grading

SPELLINGS = [("\\frac{1}{2}", "0.5", "1/2", "\\dfrac12"), ("3", "3.0", "03", "\\boxed{3}"),
             ("\\sqrt{2}", "2^{1/2}", "\\sqrt 2", "1.41421356"), ("(1,2)", "(1, 2)", "\\left(1,2\\right)", "(1,2)")]


def make_samples(problems: int, k: int, seed: int = 0):
    rng = random.Random(seed)
    out = []
    for i in range(problems):
        gold_cls = i % len(SPELLINGS)
        preds = []
        for _ in range(k):
            cls = gold_cls if rng.random() < 0.5 else rng.randrange(len(SPELLINGS))
            preds.append(rng.choice(SPELLINGS[cls]) if rng.random() > 0.05 else None)
        out.append(metrics.Samples(SPELLINGS[gold_cls][0], tuple(preds),
                                   tuple(rng.uniform(-1, 1) for _ in range(k))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=200)
    ap.add_argument("--k", default="8,64")
    args = ap.parse_args()
    grading.grade("1", "1")  # import math-verify outside the timings
    report = {"problems": args.problems}
    for k in [int(x) for x in args.k.split(",")]:
        samples = make_samples(args.problems, k)
        t0 = time.perf_counter()
        for s in samples:
            for p in s.preds:
                if p is not None:
                    grading.grade(p, s.gold)
        base = time.perf_counter() - t0
        grading._equiv_sorted.cache_clear()  # no warm start from the previous K
        t0 = time.perf_counter()
        metrics.aggregate(samples)
        ours = time.perf_counter() - t0
        print(f"K={k}: baseline (grade every candidate) {base:.2f}s, "
              f"aggregate (5 metrics) {ours:.2f}s, ratio {base / ours:.2f}x, "
              f"{args.problems / ours:.0f} problems/s")
        report[f"k{k}"] = {"baseline_s": round(base, 3), "aggregate_s": round(ours, 3),
                           "speedup": round(base / ours, 2)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
