"""Top-k / top-p thresholds over a large vocabulary: full sort against the
bisection search (issue 24 point 4), and the `lax.top_k` candidate path.

    PYTHONPATH=. python benchmarks/bench_sampling.py [--vocab 152064] [--batches 1,64,256]

Per batch B, on random logits `[B, vocab]` (standard normal: a nucleus of
thousands of tokens, far past the candidates) with top_k=50, top_p=0.95:
  sorted      `_thresholds_sorted` (one descending sort of every row);
  search      `_search_thresholds` (bisection over the float32 order keys);
  candidates  `_candidate_thresholds` on peaked logits (x 8: the set fits the
              64 candidates), the fast path `thresholds` keeps where it fits;
  sample      the whole `sample` call with the flat logits (the search path).
Each is jitted, compiled outside the timing, best of `--reps` wall times.
`search` is checked equal to `sorted`, bit for bit. Prints one line per
batch with the ratios; the last line is one JSON object (`--out` is
rewritten after every batch).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from profile_decode import best_time  # noqa: E402  (one timing rule for the benchmarks)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vocab", type=int, default=152064)
    ap.add_argument("--batches", default="1,64,256")
    ap.add_argument("--top-k", type=int, default=50)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sorted-reps", type=int, default=1, help="the sort is slow on a CPU: fewer reps")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from rstar_jax.inference import sampling as S

    rng = np.random.RandomState(0)
    report = {"backend": jax.default_backend(), "vocab": args.vocab, "top_k": args.top_k,
              "top_p": args.top_p, "batches": {}}
    sorted_fn = jax.jit(S._thresholds_sorted)
    search_fn = jax.jit(S._search_thresholds)
    cand_fn = jax.jit(lambda x, k, p: S._candidate_thresholds(x, k, p)[0])
    sample_fn = jax.jit(S.sample)
    out = args.out or (os.path.join(os.environ["OUT"], "bench_sampling.json") if os.environ.get("OUT") else None)

    def dump():  # after every batch: a run cut short keeps what it measured
        if out:
            with open(out + ".tmp", "w") as f:
                json.dump(report, f, indent=1)
            os.replace(out + ".tmp", out)

    for b in [int(t) for t in args.batches.split(",")]:
        flat = jnp.asarray(rng.randn(b, args.vocab).astype(np.float32))
        peaked = flat * 8.0
        k = jnp.full((b,), args.top_k, jnp.int32)
        p = jnp.full((b,), args.top_p, jnp.float32)
        ref = np.asarray(sorted_fn(flat, k, p))
        got = np.asarray(search_fn(flat, k, p))
        if not np.array_equal(ref, got):
            raise SystemExit(f"search thresholds differ from the sorted ones at batch {b}")
        row = {"sorted_s": best_time(sorted_fn, flat, k, p, reps=args.sorted_reps),
               "search_s": best_time(search_fn, flat, k, p, reps=args.reps),
               "candidates_s": best_time(cand_fn, peaked, k, p, reps=args.reps)}
        keys = S.slot_keys(jnp.arange(b, dtype=jnp.int32), jnp.zeros(b, jnp.int32), jnp.zeros(b, jnp.int32))
        row["sample_s"] = best_time(sample_fn, flat, keys, jnp.ones(b), k, p, reps=args.reps)
        row["sorted_over_search"] = row["sorted_s"] / row["search_s"]
        row["search_over_candidates"] = row["search_s"] / row["candidates_s"]
        report["batches"][str(b)] = row
        dump()
        print(f"batch {b:4d}: sorted {row['sorted_s'] * 1e3:9.1f} ms  search {row['search_s'] * 1e3:8.1f} ms"
              f"  candidates {row['candidates_s'] * 1e3:7.1f} ms  sample {row['sample_s'] * 1e3:8.1f} ms"
              f"  sorted/search {row['sorted_over_search']:6.1f}x  search/candidates"
              f" {row['search_over_candidates']:5.1f}x", flush=True)
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
