"""MCTS throughput against trees in flight, and the host's share of wall time.

Runs MCTS on 64 problems with 1, 8 and 64 trees in flight and prints
rollouts/s and the host-overhead share: wall time minus the time spent
inside the engine, the PPM scorer and waiting on the executor, over wall
time. Goal (issue 6): host overhead under 10% with 64 trees in flight, and
rollouts/s growing nearly linearly from 1 to 64.

Engine: the arithmetic mock (`rstar_jax.testing.mock.MockEngine`) with a
fixed latency per engine call, standing in for one batched device call
whose cost barely grows with the batch; the fake executor runs each
program on a thread pool with a fixed latency.

`--engine real`: the real engine and PPM scorer (`load_policy_engine`,
`load_ppm_scorer`, random weights from `--config`, default
configs/models/tiny.yaml, with the small tokenizer of
`mock.tiny_step_tokenizer`), the real sandboxed `ExecutorPool` and grader.
A warm-up search compiles every shape first; each measured run then also
reports the XLA compilations it triggered (should be 0: a recompile per
call would dominate), engine calls, mean batch, and the engine's prefix
cache hits and reused prompt tokens.

The real stack's pool answers programs that do not compile on the host
(`executor.screen_programs`); each run prints how many programs were
screened, executed, or answered from the cache.

Usage: PYTHONPATH=. python benchmarks/bench_search.py [--engine real] [--problems 64]
[--widths 1,8,64] [--override executor.screen_programs=false]. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from rstar_jax.config.schema import Config
from rstar_jax.data.problems import Problem
from rstar_jax.search.driver import MCTSDriver
from rstar_jax.testing.mock import MOCK_HOOKS, FakeExecutor, MockEngine, MockScorer


def problems(n: int):
    return [Problem(id=f"b{i}", question=f"What is {10 + i} + {3 * i}?", answer=str(10 + 4 * i))
            for i in range(n)]


class CompileCounter:
    """Counts XLA backend compilations (a JAX monitoring event) while active."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        import logging

        import jax

        self.count, self.seconds, self.names = 0, 0.0, []
        jax.monitoring.register_event_duration_secs_listener(self._on)
        # The names come from JAX's debug log line "Finished XLA compilation of NAME".
        lg = logging.getLogger("jax._src.dispatch")
        lg.setLevel(logging.DEBUG)
        lg.propagate = False
        handler = logging.Handler(logging.DEBUG)
        handler.emit = self._log
        lg.addHandler(handler)

    def _log(self, record):
        msg = record.getMessage()
        if msg.startswith("Finished XLA compilation of "):
            self.names.append(msg.split(" of ", 1)[1].split(" in ")[0])

    def _on(self, event, duration, **kw):
        if event == self.EVENT:
            self.count += 1
            self.seconds += duration


def cache_stats(engine):
    pc = getattr(engine, "prefix_cache", None)
    return (pc.hits, pc.reused_tokens) if pc is not None else (0, 0)


def run_once(cfg, probs, engine, executor, scorer, hooks, compiles=None):
    driver = MCTSDriver(cfg, engine, executor, scorer, hooks)
    if getattr(engine, "prefix_cache", None) is not None:
        engine.prefix_cache.clear()  # one engine serves every run: start each one cold
    done = []
    c0 = compiles.count if compiles else 0
    n0 = len(compiles.names) if compiles else 0
    h0, r0 = cache_stats(engine)
    st0 = executor.stats() if hasattr(executor, "stats") else {}
    t0 = time.perf_counter()
    driver.run(probs, done.append)
    wall = time.perf_counter() - t0
    t = driver.timers
    outside = t.engine_s + t.scorer_s + t.exec_wait_s
    h1, r1 = cache_stats(engine)
    st = executor.stats() if hasattr(executor, "stats") else {}
    return {
        "exec_stats": {k: st.get(k, 0) - st0.get(k, 0)
                       for k in ("programs", "screened", "executed", "cache_hits", "dedup_hits")},
        "compiles": (compiles.count - c0) if compiles else 0,
        "compiled": compiles.names[n0:] if compiles else [],
        "prefix_hits": h1 - h0, "prefix_reused_tokens": r1 - r0,
        "nodes": sum(len(tr.nodes) for r in done for tr in r.trees),
        # Expansions per problem: with every problem in flight at once, the longest
        # chain of them bounds the number of sequential engine calls (per cohort).
        "expansions": [sum(n.expanded for tr in r.trees for n in tr.nodes) for r in done],
        "wall_s": wall,
        "rollouts": driver.rollouts_done,
        "rollouts_per_s": driver.rollouts_done / wall,
        "engine_calls": t.engine_calls,
        "mean_batch": t.requests / max(t.engine_calls, 1),
        "engine_s": t.engine_s, "scorer_s": t.scorer_s, "exec_wait_s": t.exec_wait_s,
        "host_overhead_share": max(0.0, wall - outside) / wall,
        "solved": sum(r.solved for r in done) / len(done),
    }


def real_parts(args):
    """(config, engine factory, scorer, executor factory, hooks) of the real stack."""
    from rstar_jax.config.loader import load_config
    from rstar_jax.execution.pool import ExecutorPool
    from rstar_jax.inference import load_policy_engine, load_ppm_scorer
    from rstar_jax.search.expansion import default_hooks
    from rstar_jax.testing.mock import tiny_step_tokenizer

    answers = sorted({p.answer for p in problems(args.problems + 8)})
    tok = tiny_step_tokenizer(boxed_answers=answers[:8])  # the model now and then answers
    cfg = load_config(args.config, [
        f"model.vocab_size={len(tok)}", f"engine.num_slots={args.slots}", "engine.max_seq_len=256",
        "engine.prefill_buckets=[128,256]", "engine.truncation=left", "engine.score_batch_size=64",
        "executor.num_workers=2", "executor.timeout_s=10", "logging.progress=false",
        *args.override])
    scorer = load_ppm_scorer(cfg, tokenizer=tok)
    return (cfg, lambda: load_policy_engine(cfg, tokenizer=tok), scorer,
            lambda: ExecutorPool(cfg.executor), default_hooks())


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
    ap.add_argument("--executor", choices=("fake", "pool"), default="fake",
                    help="with --engine mock: the fake executor or the real sandboxed pool "
                         "(--exec-workers workers); --engine real always uses the pool")
    ap.add_argument("--overlap", default=None,
                    help="mcts.overlap_execution settings to compare (on: two cohorts)")
    ap.add_argument("--config", default="configs/models/tiny.yaml", help="config for --engine real")
    ap.add_argument("--max-new-tokens", type=int, default=16, help="per step, --engine real")
    ap.add_argument("--max-depth", type=int, default=4, help="--engine real")
    ap.add_argument("--slots", type=int, default=64, help="engine.num_slots, --engine real")
    ap.add_argument("--override", action="append", default=[],
                    help="config override for --engine real, e.g. executor.screen_programs=false")
    args = ap.parse_args()
    if args.overlap is None:  # the real engine is slow here: only the default setting
        args.overlap = "on" if args.engine == "real" else "on,off"

    base = Config()
    hooks = MOCK_HOOKS
    compiles = None
    if args.engine == "real":
        base, engine_factory, scorer, executor_factory, hooks = real_parts(args)
        compiles = CompileCounter()
        note = (f"REAL tiny engine from {args.config} (random weights, vocab {base.model.vocab_size}, "
                f"{base.engine.num_slots} slots), real PPM scorer, ExecutorPool with "
                f"{base.executor.num_workers} workers, real grader")
    else:
        engine_factory = lambda: MockEngine(steps=4, seeded=True, error_offset=3,  # noqa: E731
                                            call_latency_s=args.call_latency_ms / 1e3)
        scorer = MockScorer(hashed=True)
        if args.executor == "pool":  # the mock's programs are real Python: run them for real
            from rstar_jax.config.loader import load_config
            from rstar_jax.execution.pool import ExecutorPool

            ex_cfg = load_config(None, [f"executor.num_workers={args.exec_workers}",
                                        "executor.timeout_s=10", *args.override]).executor
            executor_factory = lambda: ExecutorPool(ex_cfg)  # noqa: E731
            ex_note = f"REAL ExecutorPool with {ex_cfg.num_workers} workers"
        else:
            executor_factory = lambda: FakeExecutor(args.exec_latency_ms / 1e3,  # noqa: E731
                                                    args.exec_workers)
            ex_note = f"fake executor {args.exec_latency_ms} ms per program on {args.exec_workers} workers"
        note = f"MOCK engine: {args.call_latency_ms} ms per engine call, {ex_note}"
    print(f"# bench_search: {args.problems} problems, rollouts={args.rollouts}, "
          f"candidates={args.candidates}; {note}")
    probs = problems(args.problems)
    widths = [int(w) for w in args.widths.split(",")]
    results = {}
    mcts_kw = dict(mode="mcts", rollouts=args.rollouts, candidates=args.candidates,
                   ppm_init_value=True, terminal_value="gold", errors_threshold=2)
    if args.engine == "real":
        mcts_kw.update(max_new_tokens_per_step=args.max_new_tokens, max_depth=args.max_depth,
                       temperature=1.0)
    engine = engine_factory() if args.engine == "real" else None  # one engine: compile once
    if engine is not None:  # warm-up: compile every shape the measured runs use
        if hasattr(engine, "warmup"):
            engine.warmup()  # every engine shape
        if hasattr(scorer, "warmup"):
            scorer.warmup()  # every (row bucket, length bucket) of the PPM
        cfg = dataclasses.replace(base, mcts=dataclasses.replace(
            base.mcts, trees_in_flight=max(widths), **mcts_kw))
        executor = executor_factory()
        t0 = time.perf_counter()
        run_once(cfg, problems(args.problems + 8)[-8:], engine, executor, scorer, hooks)
        run_once(dataclasses.replace(cfg, mcts=dataclasses.replace(cfg.mcts, trees_in_flight=1)),
                 problems(2), engine, executor, scorer, hooks)
        executor.close()
        print(f"# warm-up: {compiles.count} compilations, {compiles.seconds:.1f}s compiling, "
              f"{time.perf_counter() - t0:.1f}s")
    for ov in args.overlap.split(","):
        for w in widths:
            cfg = dataclasses.replace(base, mcts=dataclasses.replace(
                base.mcts, trees_in_flight=w, overlap_execution=(ov == "on"), **mcts_kw))
            executor = executor_factory()
            r = run_once(cfg, probs, engine or engine_factory(), executor, scorer, hooks, compiles)
            getattr(executor, "close", lambda: None)()
            results[(ov, w)] = r
            print(f"overlap={ov:3s} trees_in_flight={w:3d}: {r['rollouts_per_s']:8.1f} rollouts/s  "
                  f"wall {r['wall_s']:6.2f}s  engine calls {r['engine_calls']:5d} "
                  f"(mean batch {r['mean_batch']:5.1f})  host overhead {r['host_overhead_share']:.1%}  "
                  f"exec wait {r['exec_wait_s']:.2f}s  solved {r['solved']:.0%}")
            if args.engine == "real":
                print(f"    engine {r['engine_s']:.2f}s  PPM {r['scorer_s']:.2f}s  "
                      f"nodes {r['nodes']}  compiles {r['compiles']}  prefix-cache hits "
                      f"{r['prefix_hits']} ({r['prefix_reused_tokens']} tokens reused)"
                      + (f"  compiled: {', '.join(r['compiled'])}" if r["compiled"] else ""))
            ex = r["expansions"]
            print(f"    expansions per problem: mean {sum(ex) / len(ex):.1f}, max {max(ex)} "
                  f"(total {sum(ex)})")
            es = r["exec_stats"]
            if es["programs"]:
                print(f"    programs {es['programs']}: screened on the host {es['screened']}, "
                      f"executed {es['executed']}, cache hits {es['cache_hits']}, "
                      f"dedup hits {es['dedup_hits']}")
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
        "engine_share": {str(w): round(r["engine_s"] / r["wall_s"], 4) for w, r in results.items()},
        "compiles": {str(w): r["compiles"] for w, r in results.items()},
        "prefix_hits": {str(w): r["prefix_hits"] for w, r in results.items()},
        "overlap": ov0,
        "other_overlap_rollouts_per_s": {f"{o}/{w}": round(r["rollouts_per_s"], 2)
                                         for (o, w), r in other.items()},
    }
    del results_all
    print(json.dumps(out))


if __name__ == "__main__":
    main()
