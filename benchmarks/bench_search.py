"""MCTS throughput against trees in flight, and the host's share of wall time.

Runs MCTS on 64 problems with 1, 8 and 64 trees in flight and prints
rollouts/s and the host-overhead share: wall time minus the time spent
inside the engine, the PPM scorer and waiting on the executor, over wall
time. Goal (issue 6): host overhead under 10% with 64 trees in flight, and
rollouts/s growing nearly linearly from 1 to 64.

Engine: the arithmetic mock (`rstar_jax.search.mock.MockEngine`) with a
fixed latency per engine call, standing in for one batched device call
whose cost barely grows with the batch; the fake executor runs each
program on a thread pool with a fixed latency. Pass `--engine real` to use
`rstar_jax.inference.load_policy_engine(cfg)` once the engine has landed
(tiny model from `--config`).

Usage: PYTHONPATH=. python benchmarks/bench_search.py [--problems 64] [--widths 1,8,64]
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from rstar_jax.config.schema import Config
from rstar_jax.data.problems import Problem
from rstar_jax.search.driver import MCTSDriver
from rstar_jax.search.mock import MOCK_HOOKS, FakeExecutor, MockEngine, MockScorer


def problems(n: int):
    return [Problem(id=f"b{i}", question=f"What is {10 + i} + {3 * i}?", answer=str(10 + 4 * i))
            for i in range(n)]


def run_once(cfg, probs, engine, executor, scorer, hooks):
    driver = MCTSDriver(cfg, engine, executor, scorer, hooks)
    done = []
    t0 = time.perf_counter()
    driver.run(probs, done.append)
    wall = time.perf_counter() - t0
    t = driver.timers
    outside = t.engine_s + t.scorer_s + t.exec_wait_s
    return {
        "wall_s": wall,
        "rollouts": driver.rollouts_done,
        "rollouts_per_s": driver.rollouts_done / wall,
        "engine_calls": t.engine_calls,
        "mean_batch": t.requests / max(t.engine_calls, 1),
        "engine_s": t.engine_s, "scorer_s": t.scorer_s, "exec_wait_s": t.exec_wait_s,
        "host_overhead_share": max(0.0, wall - outside) / wall,
        "solved": sum(r.solved for r in done) / len(done),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--widths", default="1,8,64")
    ap.add_argument("--rollouts", type=int, default=8)
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--call-latency-ms", type=float, default=10.0)
    ap.add_argument("--exec-latency-ms", type=float, default=2.0)
    ap.add_argument("--exec-workers", type=int, default=8)
    ap.add_argument("--engine", choices=("mock", "real"), default="mock")
    ap.add_argument("--overlap", default="on,off",
                    help="mcts.overlap_execution settings to compare (on: two cohorts)")
    ap.add_argument("--config", default=None, help="config for --engine real")
    args = ap.parse_args()

    base = Config()
    hooks = MOCK_HOOKS
    if args.engine == "real":
        from rstar_jax.config.loader import load_config
        from rstar_jax.execution.pool import ExecutorPool
        from rstar_jax.inference import load_policy_engine, load_ppm_scorer
        from rstar_jax.search.expansion import default_hooks

        base = load_config(args.config)
        engine_factory = lambda: load_policy_engine(base)  # noqa: E731
        scorer = load_ppm_scorer(base)
        executor_factory = lambda: ExecutorPool(base.executor)  # noqa: E731
        hooks = default_hooks()
        note = "real engine from " + str(args.config)
    else:
        engine_factory = lambda: MockEngine(steps=4, seeded=True, error_offset=3,  # noqa: E731
                                            call_latency_s=args.call_latency_ms / 1e3)
        scorer = MockScorer(hashed=True)
        executor_factory = lambda: FakeExecutor(args.exec_latency_ms / 1e3,  # noqa: E731
                                                args.exec_workers)
        note = (f"MOCK engine (the real engine has not landed): {args.call_latency_ms} ms per engine "
                f"call, fake executor {args.exec_latency_ms} ms per program on "
                f"{args.exec_workers} workers")
    print(f"# bench_search: {args.problems} problems, rollouts={args.rollouts}, "
          f"candidates={args.candidates}; {note}")
    probs = problems(args.problems)
    widths = [int(w) for w in args.widths.split(",")]
    results = {}
    for ov in args.overlap.split(","):
        for w in widths:
            cfg = dataclasses.replace(base, mcts=dataclasses.replace(
                base.mcts, mode="mcts", rollouts=args.rollouts, candidates=args.candidates,
                trees_in_flight=w, ppm_init_value=True, terminal_value="gold", errors_threshold=2,
                overlap_execution=(ov == "on")))
            executor = executor_factory()
            r = run_once(cfg, probs, engine_factory(), executor, scorer, hooks)
            getattr(executor, "close", lambda: None)()
            results[(ov, w)] = r
            print(f"overlap={ov:3s} trees_in_flight={w:3d}: {r['rollouts_per_s']:8.1f} rollouts/s  "
                  f"wall {r['wall_s']:6.2f}s  engine calls {r['engine_calls']:5d} "
                  f"(mean batch {r['mean_batch']:5.1f})  host overhead {r['host_overhead_share']:.1%}  "
                  f"exec wait {r['exec_wait_s']:.2f}s  solved {r['solved']:.0%}")
    # Headline figures: the default setting (overlap on) when it was run.
    ov0 = "on" if "on" in args.overlap.split(",") else args.overlap.split(",")[0]
    other = {k: v for k, v in results.items() if k[0] != ov0}
    results_all, results = results, {w: r for (o, w), r in results.items() if o == ov0}
    first = results[widths[0]]["rollouts_per_s"]
    out = {
        "engine": args.engine,
        "rollouts_per_s": {str(w): round(r["rollouts_per_s"], 2) for w, r in results.items()},
        "host_overhead_share": {str(w): round(r["host_overhead_share"], 4) for w, r in results.items()},
        "speedup_vs_first": {str(w): round(r["rollouts_per_s"] / first, 2) for w, r in results.items()},
        "mean_batch": {str(w): round(r["mean_batch"], 2) for w, r in results.items()},
        "overlap": ov0,
        "other_overlap_rollouts_per_s": {f"{o}/{w}": round(r["rollouts_per_s"], 2)
                                         for (o, w), r in other.items()},
    }
    del results_all
    print(json.dumps(out))


if __name__ == "__main__":
    main()
