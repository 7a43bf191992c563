"""A/B of decode-step variants in one run (issue 17): attention paths, fused projections.

    PYTHONPATH=. python benchmarks/ab_decode_parts.py [--model configs/models/smollm2-135m.yaml]
        [--dtype float32] [--batch 64] [--cache 256] [--positions 128,192] [--reps 20]

Each variant is jitted alone on inputs of the decode step's shapes (random
values), then all are timed strictly in turn, repetition after repetition,
so that machine load hits them alike. Reported per variant: process CPU
milliseconds per call (the steadier figure on a shared CPU) and the median
wall milliseconds, and the ratio of its group's baseline over it (> 1:
faster than the baseline).

* attention (one layer, positions drawn in `--positions` [lo, hi)):
  ``full`` (baseline, the whole cache), ``blocked`` (key blocks up to the
  largest position), ``pallas`` (GPU only), and ``dense_to_max`` (the whole
  pass over a cache that is exactly as long as the largest position, no
  slicing: the most that reading only the filled part could save).
* q/k/v projection, all layers: three matmuls (baseline) vs one over the
  concatenated weight.
* gate/up projection + down, all layers: two matmuls (baseline) vs one over
  `[D, 2, F]`.

The last line is one JSON object; `--out` is rewritten after compiling
(paths that ran or failed) and after every repetition.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="configs/models/smollm2-135m.yaml")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--cache", type=int, default=256)
    ap.add_argument("--positions", default="128,192", help="lo,hi: query positions drawn in [lo, hi)")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    import jax
    import jax.numpy as jnp

    from rstar_jax.config import load_config
    from rstar_jax.models import ArchConfig
    from rstar_jax.models import decode_attention as da

    arch = ArchConfig.from_model_config(load_config(args.model).model)
    dt = jnp.dtype(args.dtype)
    b, s = args.batch, args.cache
    d, f, L = arch.hidden_size, arch.intermediate_size, arch.num_layers
    K, H, Dh = arch.num_kv_heads, arch.num_heads, arch.head_dim
    G = H // K
    lo, hi = (int(x) for x in args.positions.split(","))
    rng = np.random.RandomState(0)

    def r(*shape, scale=1.0):
        return jnp.asarray((scale * rng.standard_normal(shape)).astype(np.float32), dt)

    pos = jnp.asarray(rng.randint(lo, hi, b).astype(np.int32))
    ck, cv, q = r(b, K, s, Dh), r(b, K, s, Dh), r(b, K, G, Dh)
    end = int(pos.max()) + 1

    def attn(path):
        def fn(q, ck, cv, pos):
            with da.decode_attention_path(path):
                return da.decode_attention(q, ck, cv, pos, dt)
        return fn

    groups = {"attention": {p: (attn(p), (q, ck, cv, pos)) for p in da.PATHS
                            if p != "pallas" or jax.default_backend() == "gpu"}}
    groups["attention"]["dense_to_max"] = (attn("full"), (q, ck[:, :, :end], cv[:, :, :end], pos))

    x = r(b, 1, d)
    wq, wk, wv = r(d, H * Dh, scale=d ** -0.5), r(d, K * Dh, scale=d ** -0.5), r(d, K * Dh, scale=d ** -0.5)
    wqkv = jnp.concatenate([wq, wk, wv], 1)
    wg, wu, wd = r(d, f, scale=d ** -0.5), r(d, f, scale=d ** -0.5), r(f, d, scale=f ** -0.5)
    wgu = jnp.stack([wg, wu], 1)  # [D, 2, F]

    def layers(step):
        """`step` applied L times (the weights re-read each time, as in the model)."""
        def fn(x, *ws):
            return jax.lax.fori_loop(0, L, lambda i, x: x + 1e-3 * step(x, *ws), x)
        return fn

    def qkv3(x, wq, wk, wv):
        return (x @ wq)[..., :d] + (x @ wk).sum(-1, keepdims=True) + (x @ wv).sum(-1, keepdims=True)

    def qkv1(x, w):
        y = x @ w
        hq, hk = H * Dh, (H + K) * Dh
        return y[..., :hq][..., :d] + y[..., hq:hk].sum(-1, keepdims=True) + y[..., hk:].sum(-1, keepdims=True)

    def mlp2(x, wg, wu, wd):
        return (jax.nn.silu(x @ wg) * (x @ wu)) @ wd

    def mlp1(x, wgu, wd):
        y = (x @ wgu.reshape(d, 2 * f)).reshape(*x.shape[:-1], 2, f)
        return (jax.nn.silu(y[..., 0, :]) * y[..., 1, :]) @ wd

    groups["qkv_projection"] = {"separate": (layers(qkv3), (x, wq, wk, wv)),
                                "fused": (layers(qkv1), (x, wqkv))}
    groups["gate_up_mlp"] = {"separate": (layers(mlp2), (x, wg, wu, wd)),
                             "fused": (layers(mlp1), (x, wgu, wd))}

    print(f"backend {jax.default_backend()}; load average {os.getloadavg()[0]:.1f}; batch {b}, cache {s}, "
          f"positions [{lo}, {hi}) (largest {end - 1}), {args.dtype}, {args.reps} reps", flush=True)
    jitted, failed, diffs = {}, {}, {}
    for g, cases in groups.items():
        outs = {}
        for name, (fn, fa) in list(cases.items()):
            jf = jax.jit(fn)
            try:
                outs[name] = np.asarray(jax.block_until_ready(jf(*fa)), np.float32)
            except Exception as e:  # noqa: BLE001 - a kernel this backend cannot run: say so
                failed[f"{g}/{name}"] = f"{type(e).__name__}: {str(e)[:300]}"
                print(f"{g:15s} {name:13s} failed: {failed[f'{g}/{name}']}", flush=True)
                del cases[name]
                continue
            jitted[(g, name)] = (jf, fa)
        base = next(iter(outs.values()))
        for name, o in outs.items():  # the variants compute the same thing: recorded
            diffs[f"{g}/{name}"] = float(np.abs(o - base).max() / (np.abs(base).max() + 1e-30))
    cpu = {k: 0.0 for k in jitted}
    wall = {k: [] for k in jitted}
    out = {"backend": jax.default_backend(), "batch": b, "cache": s, "positions": [lo, hi],
           "dtype": args.dtype, "reps": 0, "load_avg": os.getloadavg()[0], "groups": {},
           "failed": failed, "max_rel_diff_vs_baseline": diffs, "decode_attention_paths": da.paths_used()}

    def tally(reps, say=False):
        """The figures after `reps` repetitions into `out` (and `--out`)."""
        out["reps"] = reps
        for g, cases in groups.items():
            names = list(cases)
            rows = {}
            for name in names:
                c_ms, w_ms = cpu[(g, name)] / reps * 1e3, statistics.median(wall[(g, name)]) * 1e3
                c0, w0 = cpu[(g, names[0])] / reps * 1e3, statistics.median(wall[(g, names[0])]) * 1e3
                rows[name] = dict(cpu_ms=round(c_ms, 3), wall_ms=round(w_ms, 3),
                                  speedup_cpu=round(c0 / c_ms, 3), speedup_wall=round(w0 / w_ms, 3))
                if say:
                    print(f"{g:15s} {name:13s} {c_ms:9.3f} ms CPU  {w_ms:9.3f} ms wall   "
                          f"x{c0 / c_ms:5.2f} (CPU)  x{w0 / w_ms:5.2f} (wall) vs {names[0]}  "
                          f"(max rel diff {diffs[f'{g}/{name}']:.1e})", flush=True)
            out["groups"][g] = rows
        dump()

    def dump():  # written as soon as there is a figure: a run cut short keeps what it measured
        if args.out:
            with open(args.out + ".tmp", "w") as fh:
                json.dump(out, fh, indent=1)
            os.replace(args.out + ".tmp", args.out)

    dump()  # which paths compiled and which failed, before any timing
    for rep in range(args.reps):
        for k, (jf, fa) in jitted.items():
            t, c = time.perf_counter(), time.process_time()
            jax.block_until_ready(jf(*fa))
            cpu[k] += time.process_time() - c
            wall[k].append(time.perf_counter() - t)
        tally(rep + 1, say=rep + 1 == args.reps)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
