"""A/B of the engine against another commit, both measured in one run (issue 17).

    PYTHONPATH=. python benchmarks/ab_engine.py [--base 055ac2a] [--reps 3]

Reported: per repetition the ratio new / base (wall) and base / new
(process CPU seconds, steadier under load), and their medians. The base commit is exported (`git archive`, no worktree) to /tmp/engine-base-<rev>;
one worker process per tree (PYTHONPATH pointing at that tree) builds the
same SmolLM2-135M-shaped model (random weights, float32, seed 0), warms its
engines up, then measures on command, the two trees strictly alternating
(A B, B A, ...) so that machine load hits both alike. Medians are reported.

* prefill: 16 prompts of 128..1024 tokens (evenly spaced) into 16 slots of
  an engine with buckets 128..1024, prefix cache off; context tokens per
  second. The base puts one prompt per call (`prefill` + `insert`); this
  tree uses `prefill_into_slots` (batched calls) when the tree has it.
* generate: `generate` of 64 prompts of 128 tokens, 64 new tokens each,
  greedy, 64 slots (bench_engine's shape); new tokens per second.

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PREFILL_LENS = [128 + round(i * (1024 - 128) / 15) for i in range(16)]
GEN_BATCH, GEN_PROMPT, GEN_NEW = 64, 128, 64


def worker() -> None:
    """Runs in one tree: builds engines, then answers `prefill SEED` / `generate SEED`."""
    import jax
    import numpy as np
    from flax import nnx

    sys.path.insert(0, HERE)
    from bench_engine import word_tokenizer

    from rstar_jax.config import load_config
    from rstar_jax.inference import Engine, SamplingParams
    from rstar_jax.models import ArchConfig, Policy

    root = os.path.dirname(HERE)
    cfg = load_config(os.path.join(root, "configs/models/smollm2-135m.yaml"))
    arch = ArchConfig.from_model_config(cfg.model)
    policy = Policy(arch, rngs=nnx.Rngs(0))
    tok = word_tokenizer(arch.vocab_size)
    E = cfg.engine.__class__
    pre = Engine(policy, tok, E(num_slots=16, max_seq_len=1152, prefill_buckets=[128, 256, 512, 1024],
                                prefix_cache=False))
    gen = Engine(policy, tok, E(num_slots=GEN_BATCH, max_seq_len=256, prefill_buckets=[128, 256],
                                decode_steps_per_call=8, max_new_tokens=GEN_NEW, prefix_cache=False))
    params = SamplingParams(max_new_tokens=1, temperature=0.0)

    def prefill(seed):
        rng = np.random.RandomState(seed)
        ids = [list(rng.randint(1, arch.vocab_size, n)) for n in PREFILL_LENS]
        pre.core.reset()
        t, c = time.perf_counter(), time.process_time()
        if hasattr(pre, "prefill_into_slots"):
            slots = pre.prefill_into_slots(ids, params)
        else:
            slots = list(range(len(ids)))
            for slot, i in zip(slots, ids):
                pre.insert(pre.prefill(i), slot, params)
        jax.block_until_ready(pre.core.state)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        for slot in slots:
            pre.free(slot)
        pre.core.reset()
        return dict(seconds=wall, cpu_s=cpu, tokens=sum(n - 1 for n in PREFILL_LENS))

    def generate(seed):
        rng = np.random.RandomState(seed)
        prompts = [" ".join(f"t{i}" for i in rng.randint(1, arch.vocab_size, GEN_PROMPT))
                   for _ in range(GEN_BATCH)]
        t, c = time.perf_counter(), time.process_time()
        out = gen.generate(prompts, n=1, max_new_tokens=GEN_NEW, temperature=0.0)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        assert all(len(r[0].token_ids) == GEN_NEW for r in out)
        return dict(seconds=wall, cpu_s=cpu, tokens=GEN_BATCH * GEN_NEW)

    t = time.perf_counter()
    prefill(1000)  # warm-up: compiles every shape the measurements use
    generate(1000)
    print(json.dumps({"ready": time.perf_counter() - t}), flush=True)
    for line in sys.stdin:
        what, seed = line.split()
        r = {"prefill": prefill, "generate": generate}[what](int(seed))
        print(json.dumps({"what": what, **r}), flush=True)


def export(rev: str) -> str:
    path = f"/tmp/engine-base-{rev}"
    if not os.path.isdir(path):
        os.makedirs(path)
        archive = subprocess.run(["git", "-C", os.path.dirname(HERE), "archive", rev],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", path], input=archive, check=True)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="055ac2a")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker()
    trees = {"base": export(args.base), "new": os.path.dirname(HERE)}
    procs = {}
    for name, tree in trees.items():
        env = {**os.environ, "PYTHONPATH": tree, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
        procs[name] = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"], env=env,
                                       cwd=tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    for name, p in procs.items():
        ready = json.loads(p.stdout.readline())
        print(f"# {name} ({trees[name]}) warm after {ready['ready']:.0f} s", flush=True)
    runs = {(n, w): [] for n in procs for w in ("prefill", "generate")}
    cpu = {(n, w): [] for n in procs for w in ("prefill", "generate")}
    loads = []
    for rep in range(args.reps):
        order = ["base", "new"] if rep % 2 == 0 else ["new", "base"]
        for what in ("prefill", "generate"):
            for name in order:
                p = procs[name]
                p.stdin.write(f"{what} {rep}\n")
                p.stdin.flush()
                r = json.loads(p.stdout.readline())
                loads.append(os.getloadavg()[0])
                runs[(name, what)].append(r["tokens"] / r["seconds"])
                cpu[(name, what)].append(r["cpu_s"])
                print(f"rep {rep} {what:8s} {name:4s}: {r['tokens'] / r['seconds']:8.1f} tok/s "
                      f"({r['seconds']:.2f} s wall, {r['cpu_s']:.1f} s CPU; load {loads[-1]:.1f})",
                      flush=True)
    for p in procs.values():
        p.stdin.close()
        p.wait()
    # The load drifts over a run, so the ratios are taken per repetition (the
    # two trees measured back to back) and their median is the headline.
    med = {f"{n}_{w}_tokens_per_s": statistics.median(v) for (n, w), v in runs.items()}
    ratio = {w: [a / b for a, b in zip(runs[("new", w)], runs[("base", w)])] for w in ("prefill", "generate")}
    cpu_ratio = {w: [b / a for a, b in zip(cpu[("new", w)], cpu[("base", w)])] for w in ("prefill", "generate")}
    out = {**med,
           "prefill_speedup": statistics.median(ratio["prefill"]),
           "generate_speedup": statistics.median(ratio["generate"]),
           "prefill_speedup_cpu_time": statistics.median(cpu_ratio["prefill"]),
           "generate_speedup_cpu_time": statistics.median(cpu_ratio["generate"]),
           "per_rep_speedup": {w: [round(x, 2) for x in v] for w, v in ratio.items()},
           "per_rep_speedup_cpu_time": {w: [round(x, 2) for x in v] for w, v in cpu_ratio.items()},
           "per_rep": {f"{n}_{w}": [round(x, 1) for x in v] for (n, w), v in runs.items()},
           "base": args.base, "reps": args.reps, "load_avg": [round(x, 1) for x in loads],
           "cpus": os.cpu_count()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
