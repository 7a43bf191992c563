"""Executor throughput and correctness: our pool vs a subprocess per program vs
the reference's design, on a realistic step-program workload.

Run: `PYTHONPATH=. python benchmarks/bench_executor.py [--n 400] [--workers 8]`.
Approaches (same workload, same 2 s timeout, one run):
  pool        ExecutorPool: warm sandboxed workers forking a child per program.
              Also timed without its kernel sandbox (bwrap + seccomp; issue 18)
              on the same programs, for the sandbox's added cost per program.
  subprocess  a new `python` per program (same observation rules), as many at
              a time as there are CPU cores (more only starve each other).
  reference   the reference's design: a new 12-worker (fork) process pool per
              expansion round of 40 programs, in-process `exec` under
              `signal.alarm`, globals persisting per worker within the round.
The subprocess baseline is timed on the first `--subprocess-n` programs only
(it is slow; a rate needs no more).
Ground truth: a fresh interpreter per program with a generous timeout (30 s);
the never-ending programs are expected to time out. A result matches when
(observation, error) equal the truth's, or both timed out.
The endless programs use the 2 s timeout, so a run takes a few minutes.
Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import json
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from exec_workload import chains, tree_rounds  # noqa: E402

from rstar_jax.config.schema import ExecutorConfig  # noqa: E402
from rstar_jax.execution.observation import (  # noqa: E402
    CappedWriter,
    _compile,
    format_exception,
    format_output,
)
from rstar_jax.execution.pool import ExecutorPool  # noqa: E402

TIMEOUT_S = 2.0
ROUND = 40  # programs per expansion round (reference design)
_WRAPPER = ("import json, sys\nfrom rstar_jax.execution.observation import run_program\n"
            "o, e = run_program(sys.stdin.read())\nsys.stdout.write(json.dumps([o, e]))")


# ---- (b) / ground truth: a fresh interpreter per program -----------------

def _fresh(code: str, timeout: float):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.getcwd(), "OPENBLAS_NUM_THREADS": "1"}
    try:
        p = subprocess.run([sys.executable, "-c", _WRAPPER], input=code, capture_output=True,
                           text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return ("timeout", True, True)
    try:
        o, e = json.loads(p.stdout)
        return (o, e, False)
    except ValueError:
        return (f"crashed rc={p.returncode}", True, False)


def run_subprocess(programs, workers, timeout):
    with cf.ThreadPoolExecutor(workers) as ex:
        return list(ex.map(lambda c: _fresh(c, timeout), programs))


# ---- (c) the reference's design -------------------------------------------

_REF_GLOBALS: dict = {}


class _Alarm(BaseException):
    pass


def _on_alarm(signum, frame):
    raise _Alarm()


def _ref_exec(args):
    code, timeout = args
    out = CappedWriter(1_000_000)
    saved = sys.stdout
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(int(timeout))
    try:
        sys.stdout = out
        body, last = _compile(code)
        exec(body, _REF_GLOBALS)
        if last is not None:
            value = eval(last, _REF_GLOBALS)
            if value is not None:
                print(repr(value))
        signal.alarm(0)
        return (format_output(out.getvalue()), False, False)
    except _Alarm:
        return ("timeout", True, True)
    except BaseException as e:  # noqa: BLE001
        signal.alarm(0)
        return (format_exception(e), True, False)
    finally:
        signal.alarm(0)
        sys.stdout = saved


def run_reference(programs, timeout):
    results = []
    ctx = mp.get_context("fork")
    for i in range(0, len(programs), ROUND):
        with cf.ProcessPoolExecutor(12, mp_context=ctx) as ex:
            results.extend(ex.map(_ref_exec, [(c, timeout) for c in programs[i:i + ROUND]]))
    return results


# ---- (a) our pool -------------------------------------------------------------

def run_pool(pool, programs, timeout):
    pool.clear_cache()
    return [(r.observation, r.error, r.timed_out) for r in pool.run(programs, timeout_s=timeout)]


# ---- measurement ----------------------------------------------------------------

def _matches(result, truth):
    if truth[2] or result[2]:
        return truth[2] and result[2]
    return result[:2] == truth[:2]


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def _latencies(run_one, programs):
    ms = []
    for code in programs:
        t0 = time.perf_counter()
        run_one(code)
        ms.append((time.perf_counter() - t0) * 1e3)
    ms.sort()
    return {"p50_ms": round(statistics.median(ms), 1), "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 1)}


def _run_rounds(pool, rounds) -> float:
    pool.clear_cache()
    t0 = time.perf_counter()
    for batch in rounds:
        pool.run(batch, timeout_s=TIMEOUT_S)
    return time.perf_counter() - t0


def tree_cache_benefit(pool):
    """Cache + dedup on tree-shaped rounds vs the same work made unique."""
    rounds = tree_rounds()
    pool.clear_cache()
    before = pool.stats()
    t0 = time.perf_counter()
    for batch in rounds:
        pool.run(batch, timeout_s=TIMEOUT_S)
    t_cached = time.perf_counter() - t0
    after = pool.stats()
    n = after["programs"] - before.get("programs", 0)
    hits = (after.get("cache_hits", 0) - before.get("cache_hits", 0)
            + after.get("dedup_hits", 0) - before.get("dedup_hits", 0))
    pool.clear_cache()
    uid = 0
    t0 = time.perf_counter()
    for batch in rounds:
        unique = []
        for code in batch:
            uid += 1
            unique.append(f"{code}\n_unique_{uid} = {uid}")
        pool.run(unique, timeout_s=TIMEOUT_S)
    t_plain = time.perf_counter() - t0
    return {"programs": n, "hit_rate": round(hits / n, 3), "s_with_cache": round(t_cached, 2),
            "s_without_cache": round(t_plain, 2), "speedup": round(t_plain / t_cached, 2)}


def _unsandboxed_pool(cfg):
    """The same pool without the kernel sandbox (the cost baseline of issue 18)."""
    from rstar_jax.execution import isolation

    real = isolation.probe
    isolation.probe = lambda: isolation.Isolation(False, None, "n/a", False, "benchmark baseline")
    try:
        return ExecutorPool(dataclasses.replace(cfg, allow_unsandboxed=True))
    finally:
        isolation.probe = real


def sandbox_cost(cfg, quick):
    """Sandboxed vs unsandboxed pool, same programs, same run: the added cost per program."""
    out = {}
    for name, make in (("sandboxed", ExecutorPool), ("unsandboxed", _unsandboxed_pool)):
        t0 = time.perf_counter()
        with make(cfg) as pool:
            start = time.perf_counter() - t0
            _, t = _timed(run_pool, pool, quick, TIMEOUT_S)
            lat = _latencies(lambda c: (pool.clear_cache(), pool.run([c])), quick[:60])
        out[name] = {"programs_per_s": round(len(quick) / t, 1), "pool_start_s": round(start, 2), **lat}
    sb, un = out["sandboxed"], out["unsandboxed"]
    out["added_ms_per_program_p50"] = round(sb["p50_ms"] - un["p50_ms"], 1)
    out["added_ms_per_program_throughput"] = round(1e3 / sb["programs_per_s"] - 1e3 / un["programs_per_s"], 2)
    return out


def main() -> int:
    global TIMEOUT_S
    warnings.simplefilter("ignore")  # sympy deprecation chatter from the reference's leaked globals
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="programs in the workload")
    ap.add_argument("--workers", type=int, default=8, help="pool workers")
    ap.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per program (all approaches)")
    ap.add_argument("--subprocess-n", type=int, default=100,
                    help="programs (a prefix of the workload) timed for the slow subprocess baseline")
    args = ap.parse_args()
    TIMEOUT_S = args.timeout

    work = chains(args.n)
    programs = [c for c, _ in work]
    kinds = [k for _, k in work]
    quick = [c for c, k in work if k != "endless"]
    print(f"workload: {len(programs)} programs, {kinds.count('raise')} raising steps, "
          f"{kinds.count('endless')} endless; timeout {TIMEOUT_S:g} s; workers {args.workers}", flush=True)

    truth = run_subprocess([c for c, k in work if k != "endless"], os.cpu_count() or 2, 30.0)
    it = iter(truth)
    truth = [("timeout", True, True) if k == "endless" else next(it) for k in kinds]
    n_err = sum(1 for t in truth if t[1] and not t[2])
    print(f"ground truth: {n_err} programs raise ({n_err / len(truth):.0%}), "
          f"{sum(t[2] for t in truth)} time out", flush=True)
    truth_quick = [t for t, k in zip(truth, kinds) if k != "endless"]

    cfg = ExecutorConfig(num_workers=args.workers, timeout_s=TIMEOUT_S)
    figures = {"programs_per_s": {}, "programs_per_s_no_timeouts": {}, "correct_share": {},
               "correct_share_no_timeouts": {}, "latency": {}}
    with ExecutorPool(cfg) as pool:
        res, t_all = _timed(run_pool, pool, programs, TIMEOUT_S)
        res_q, t_q = _timed(run_pool, pool, quick, TIMEOUT_S)
        figures["programs_per_s"]["pool"] = len(programs) / t_all
        figures["programs_per_s_no_timeouts"]["pool"] = len(quick) / t_q
        figures["correct_share"]["pool"] = sum(map(_matches, res, truth)) / len(truth)
        figures["correct_share_no_timeouts"]["pool"] = sum(map(_matches, res_q, truth_quick)) / len(quick)
        figures["latency"]["pool"] = _latencies(lambda c: (pool.clear_cache(), pool.run([c])), quick[:60])
        figures["tree_cache"] = tree_cache_benefit(pool)
        figures["pool_stats"] = pool.stats()
    snap_cfg = dataclasses.replace(cfg, prefix_snapshots=16)
    with ExecutorPool(snap_cfg) as pool, ExecutorPool(cfg) as plain:
        rounds = tree_rounds()
        t_plain = _run_rounds(plain, rounds)
        t_snap = _run_rounds(pool, rounds)
        figures["tree_snapshots"] = {"s_cache": round(t_plain, 2), "s_cache_and_snapshots": round(t_snap, 2),
                                     "resumed": pool.stats().get("resumed", 0),
                                     "speedup": round(t_plain / t_snap, 2)}
    figures["sandbox_cost"] = sandbox_cost(cfg, quick)
    print(f"pool done: {figures['programs_per_s']['pool']:.1f}/s; sandbox cost {figures['sandbox_cost']}",
          flush=True)

    n_sub = min(args.workers, os.cpu_count() or 1)  # more would only starve each other
    k = min(args.subprocess_n, len(programs))
    sub_q = [c for c, kind in work[:k] if kind != "endless"]
    sub_truth_q = [t for t, kind in zip(truth[:k], kinds[:k]) if kind != "endless"]
    res, t_all = _timed(run_subprocess, programs[:k], n_sub, TIMEOUT_S)
    res_q, t_q = _timed(run_subprocess, sub_q, n_sub, TIMEOUT_S)
    figures["programs_per_s"]["subprocess"] = k / t_all
    figures["programs_per_s_no_timeouts"]["subprocess"] = len(sub_q) / t_q
    figures["correct_share"]["subprocess"] = sum(map(_matches, res, truth[:k])) / k
    figures["correct_share_no_timeouts"]["subprocess"] = sum(map(_matches, res_q, sub_truth_q)) / len(sub_q)
    figures["latency"]["subprocess"] = _latencies(lambda c: _fresh(c, TIMEOUT_S), quick[:20])
    print(f"subprocess done: {figures['programs_per_s']['subprocess']:.1f}/s", flush=True)

    res, t_all = _timed(run_reference, programs, TIMEOUT_S)
    res_q, t_q = _timed(run_reference, quick, TIMEOUT_S)
    figures["programs_per_s"]["reference"] = len(programs) / t_all
    figures["programs_per_s_no_timeouts"]["reference"] = len(quick) / t_q
    figures["correct_share"]["reference"] = sum(map(_matches, res, truth)) / len(truth)
    figures["correct_share_no_timeouts"]["reference"] = sum(map(_matches, res_q, truth_quick)) / len(quick)
    wrong = [(c, r, t) for c, r, t in zip(programs, res, truth) if not _matches(r, t)]
    figures["reference_wrong_examples"] = [{"got": r[0][:80], "truth": t[0][:80]} for _, r, t in wrong[:3]]
    print(f"reference done: {figures['programs_per_s']['reference']:.1f}/s", flush=True)

    for key in ("programs_per_s", "programs_per_s_no_timeouts", "correct_share", "correct_share_no_timeouts"):
        figures[key] = {k: round(v, 3) for k, v in figures[key].items()}
    pps, ppq = figures["programs_per_s"], figures["programs_per_s_no_timeouts"]
    print(f"{'':12s} {'prog/s':>8s} {'no-timeout':>10s} {'correct':>8s}")
    for name in ("pool", "subprocess", "reference"):
        print(f"{name:12s} {pps[name]:8.1f} {ppq[name]:10.1f} {figures['correct_share'][name]:8.3f}")
    figures["ratios"] = {
        "pool_vs_subprocess_no_timeouts": round(ppq["pool"] / ppq["subprocess"], 2),
        "pool_vs_reference_whole": round(pps["pool"] / pps["reference"], 2),
    }
    print(f"pool / subprocess (no timeouts): {figures['ratios']['pool_vs_subprocess_no_timeouts']}x; "
          f"pool / reference (whole): {figures['ratios']['pool_vs_reference_whole']}x")
    print(f"tree-shaped workload: {figures['tree_cache']}")
    print(f"prefix snapshots on the tree workload: {figures['tree_snapshots']}")
    figures["p50_ms"] = figures["latency"]["pool"]["p50_ms"]
    figures["p99_ms"] = figures["latency"]["pool"]["p99_ms"]
    figures["machine"] = "2-core CPU dev box, no accelerator"
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
