"""Training step throughput: SFT and PPM steps, tiny and SmolLM2-135M-shaped
models, on 1 device and on the 8-fake-device mesh, with an MFU estimate
against this CPU's measured matmul peak; plus bucketing vs packing.

Run: `PYTHONPATH=. python benchmarks/bench_train.py [--steps 3] [--quick]`.
- peak: the best float32 FLOP/s of a jitted 2048^3 matmul on one device
  (all cores); the 8 fake devices share the same cores, so MFU on both
  layouts is measured against the same peak.
- step figures: the median of `--steps` timed steps after one warm-up
  (compile) step; tokens = all row slots of the batch (random tokens,
  no padding). MFU = tokens/s x training FLOPs per token / peak.
- bucket vs pack: the tiny model over one epoch of 256 SFT-like examples
  with lengths drawn from the rStar fixtures' spread (log-normal, 60..1000
  tokens), timed end to end including each shape's compile.
Last line: one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from rstar_jax.config.loader import load_config  # noqa: E402
from rstar_jax.config.schema import MeshConfig, OptimConfig  # noqa: E402
from rstar_jax.models.decoder import PPM, ArchConfig, Policy  # noqa: E402
from rstar_jax.models.loading import init_model  # noqa: E402
from rstar_jax.models.mesh import make_mesh  # noqa: E402
from rstar_jax.training import pipeline, steps  # noqa: E402
from rstar_jax.training import state as st  # noqa: E402
from rstar_jax.training.loop import flops_per_token  # noqa: E402
from rstar_jax.training.records import LMExample  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = load_config(os.path.join(REPO, "configs", "models", "tiny.yaml"))
RULES = CFG.mesh.training_rules


def matmul_peak(n: int = 2048, reps: int = 5) -> float:
    """Best FLOP/s of a float32 n x n matmul on one device."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        f(a, a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def arch_of(name: str) -> ArchConfig:
    cfg = load_config(os.path.join(REPO, "configs", "models", f"{name}.yaml"))
    return ArchConfig.from_model_config(cfg.model)


def make_batch(kind: str, arch: ArchConfig, rows: int, t: int):
    rng = np.random.default_rng(0)
    if kind == "ppm":
        return {"tokens": rng.integers(1, arch.vocab_size, (rows, 2, t)).astype(np.int32),
                "lengths": np.full((rows, 2), t, np.int32),
                "weights": np.full((rows,), 0.25, np.float32),
                "q": np.zeros((rows, 2), np.float32)}
    toks = rng.integers(1, arch.vocab_size, (rows, t + 1)).astype(np.int32)
    return {"inputs": toks[:, :-1], "targets": toks[:, 1:], "weights": np.ones((rows, t), np.float32),
            "positions": np.broadcast_to(np.arange(t, dtype=np.int32), (rows, t)).copy()}


def build_step(kind: str, arch: ArchConfig, devices, mesh_cfg: MeshConfig, batch):
    mesh = make_mesh(mesh_cfg, devices)
    cls = PPM if kind == "ppm" else Policy
    graphdef, params = st.split_params(init_model(cls, arch, mesh=mesh, rules=RULES, seed=0))
    tx = steps.optimizer(OptimConfig(learning_rate=1e-5), 1000)
    state = st.init_train_state(tx, params, mesh)
    gb = len(next(iter(batch.values())))
    bsh = st.batch_shardings(mesh, RULES, batch, gb)
    loss_fn = steps.ppm_loss_fn(CFG.ppm, "bt") if kind == "ppm" else steps.lm_loss
    fn = steps.make_train_step(graphdef, loss_fn, tx, mesh=mesh, rules=RULES,
                               state_shardings=jax.tree.map(lambda x: x.sharding, state),
                               batch_shardings=bsh)
    return fn, state, bsh


def time_steps(kind: str, arch: ArchConfig, devices, mesh_cfg, rows: int, t: int, n: int):
    batch = make_batch(kind, arch, rows, t)
    fn, state, bsh = build_step(kind, arch, devices, mesh_cfg, batch)
    gb = {k: jax.device_put(v, bsh[k]) for k, v in batch.items()}
    t0 = time.perf_counter()
    state, m = fn(state, gb)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(n):
        gb = {k: jax.device_put(v, bsh[k]) for k, v in batch.items()}
        t0 = time.perf_counter()
        state, m = fn(state, gb)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    tokens = rows * t * (2 if kind == "ppm" else 1)
    return {"step_s": step, "tokens_per_s": tokens / step, "first_step_s": compile_s,
            "tokens": tokens}


def bucket_vs_pack(n_examples: int = 256, batch: int = 8, seq_len: int = 1024):
    """Tiny model, one epoch of log-normal lengths: bucketing vs packing."""
    arch = arch_of("tiny")
    rng = np.random.default_rng(1)
    lens = np.clip(rng.lognormal(np.log(300), 0.6, n_examples), 60, seq_len).astype(int)
    exs = [LMExample(np.ones(n, np.int32), np.ones(n, np.int32), np.ones(n, np.float32))
           for n in lens]
    plans = {
        "bucket": pipeline.bucket_plan(lens, batch=batch, epochs=1.0, seed=0,
                                       buckets=[128, 256, 512, 1024], seq_len=seq_len),
        "pack": pipeline.pack_plan(lens, batch=batch, epochs=1.0, seed=0, seq_len=seq_len),
    }
    out = {}
    mesh_cfg = MeshConfig(data=1, fsdp=1, tensor=1)
    for name, plan in plans.items():
        ds = pipeline.make_dataset(exs, plan, kind="lm")
        first = ds[0]
        fn, state, bsh = build_step("lm", arch, jax.devices()[:1], mesh_cfg, first)
        t0 = time.perf_counter()
        for k in range(len(ds)):
            state, m = fn(state, {key: jax.device_put(v, bsh[key]) for key, v in ds[k].items()})
        jax.block_until_ready(m)
        wall = time.perf_counter() - t0
        out[name] = {"steps": len(ds), "wall_s": wall, "tokens_per_s": float(lens.sum()) / wall,
                     "padding": pipeline.padding_fraction(plan, lens),
                     "shapes": len(set(plan.lengths))}
    out["pack_over_bucket"] = out["pack"]["tokens_per_s"] / out["bucket"]["tokens_per_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny model only")
    args = ap.parse_args()
    assert jax.device_count() >= 8, "needs 8 (fake) devices"
    peak = matmul_peak()
    print(f"CPU matmul peak (float32, 1 device): {peak / 1e9:.1f} GFLOP/s")
    shapes = {"tiny": (8, 256), "smollm2-135m": (4, 128)}
    if args.quick:
        shapes = {"tiny": shapes["tiny"]}
    results = {"peak_flops": peak, "runs": []}
    layouts = {"1dev": (jax.devices()[:1], MeshConfig(data=1, fsdp=1, tensor=1)),
               "8dev-2x2x2": (jax.devices()[:8], MeshConfig(data=2, fsdp=2, tensor=2))}
    for name, (rows, t) in shapes.items():
        arch = arch_of(name)
        for kind in ("sft", "ppm"):
            per = {}
            for layout, (devs, mcfg) in layouts.items():
                r = time_steps("ppm" if kind == "ppm" else "lm", arch, devs, mcfg, rows, t,
                               args.steps)
                fpt = flops_per_token(arch, t, lm_head=kind == "sft")
                r.update(model=name, kind=kind, layout=layout, batch=rows, seq=t,
                         mfu=r["tokens_per_s"] * fpt / peak)
                per[layout] = r
                results["runs"].append(r)
                print(f"{name:13s} {kind:3s} {layout:10s} step {r['step_s'] * 1e3:9.1f} ms  "
                      f"{r['tokens_per_s']:9.0f} tok/s  MFU {100 * r['mfu']:5.1f}%  "
                      f"(first step {r['first_step_s']:.1f} s)")
            ratio = per["8dev-2x2x2"]["tokens_per_s"] / per["1dev"]["tokens_per_s"]
            print(f"{'':13s} {kind:3s} 8dev/1dev tokens/s ratio {ratio:.2f}")
    bp = bucket_vs_pack()
    results["bucket_vs_pack"] = bp
    for k in ("bucket", "pack"):
        print(f"tiny epoch {k:6s}: {bp[k]['steps']} steps, {bp[k]['shapes']} shapes, "
              f"padding {100 * bp[k]['padding']:.0f}%, {bp[k]['tokens_per_s']:.0f} tok/s "
              f"({bp[k]['wall_s']:.1f} s incl. compiles)")
    print(f"pack / bucket tokens/s: {bp['pack_over_bucket']:.2f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
