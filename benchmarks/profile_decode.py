"""One decode step of the SmolLM2-135M-shaped model, part by part, against its roofline.

    PYTHONPATH=. python benchmarks/profile_decode.py [--batch 64] [--cache 256]

Times (best of several runs, so load only ever inflates them) the pieces of
one batch-B decode step at cache length S, each jitted alone on inputs of
the engine's shapes, and prints each one's FLOPs and bytes (XLA's
`cost_analysis`) and its own roofline time at the machine's measured peak
matmul GFLOP/s and read bandwidth. Also times the engine's real decode call
per step, so the sum of the parts can be checked against the whole.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def best_time(fn, *args, reps=7):
    """Best wall seconds of `fn(*args)` (blocked) over `reps` runs after one warm-up."""
    import jax

    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t)
    return best


def cost(fn, *args):
    """(flops, bytes accessed) of jitted `fn` on `args` from XLA's cost analysis."""
    ca = fn.lower(*args).compile().cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    return float(ca.get("flops", 0.0)), float(ca.get("bytes accessed", 0.0))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--cache", type=int, default=256)
    args = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    import jax
    import jax.numpy as jnp
    from bench_engine import machine_limits, step_cost, word_tokenizer
    from flax import nnx

    from rstar_jax.config import load_config
    from rstar_jax.inference import Engine
    from rstar_jax.inference.sampling import sample, slot_keys
    from rstar_jax.inference.types import SamplingParams
    from rstar_jax.models import ArchConfig, Policy
    from rstar_jax.models.decode_attention import full_decode_attention as _decode_attention

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = load_config(os.path.join(root, "configs/models/smollm2-135m.yaml"))
    arch = ArchConfig.from_model_config(cfg.model)
    policy = Policy(arch, rngs=nnx.Rngs(0))
    b, s = args.batch, args.cache
    d, L, V = arch.hidden_size, arch.num_layers, arch.vocab_size
    K, H, Dh = arch.num_kv_heads, arch.num_heads, arch.head_dim
    G = H // K
    flops_s, bytes_s = machine_limits(jnp.float32, False)
    gflops, gbs = flops_s / 1e9, bytes_s / 1e9
    print(f"load average {os.getloadavg()[0]:.1f}; peak matmul {gflops:.0f} GFLOP/s, "
          f"read {gbs:.1f} GB/s; batch {b}, cache {s}", flush=True)
    rng = np.random.RandomState(0)
    r = lambda *shape: jnp.asarray(rng.standard_normal(shape).astype(np.float32))  # noqa: E731

    x = r(b, 1, d)
    blk = policy.model.layers[0]
    wq, wk, wv, wo = (blk.attn.q[...], blk.attn.k[...], blk.attn.v[...], blk.attn.o[...])
    wg, wu, wd = blk.mlp.gate[...], blk.mlp.up[...], blk.mlp.down[...]
    emb = policy.model.embed[...]
    ck, cv = r(b, K, s, Dh), r(b, K, s, Dh)  # the cache layout [B, K, S, Dh]
    q = r(b, K, G, Dh)
    pos = jnp.full((b,), s - 40, jnp.int32)
    mask = jnp.arange(s)[None, :] <= pos[:, None]
    logits = r(b, V)
    keys = slot_keys(jnp.arange(b), jnp.zeros(b, jnp.int32), jnp.zeros(b, jnp.int32))
    greedy_t = jnp.zeros((b,), jnp.float32)
    temp_t = jnp.full((b,), 0.7, jnp.float32)
    no_k, no_p = jnp.zeros((b,), jnp.int32), jnp.ones((b,), jnp.float32)
    k_new = r(b, 1, K, Dh)  # a step's keys [B, T, K, Dh]

    def proj(x, wq, wk, wv):
        return (jnp.einsum("btd,dnh->btnh", x, wq), jnp.einsum("btd,dnh->btnh", x, wk),
                jnp.einsum("btd,dnh->btnh", x, wv))

    def scatter(c, k, pos):
        return c.at[jnp.arange(b)[:, None], :, pos[:, None]].set(k, mode="drop")

    def scatter8(c, k, pos):
        return jax.lax.fori_loop(0, 8, lambda i, c: scatter(c, k, pos + i), c)

    parts = {
        "qkv projections (1 layer)": (jax.jit(proj), (x, wq, wk, wv), L),
        "o projection (1 layer)": (jax.jit(lambda o, w: jnp.einsum("btnh,nhd->btd", o, w)),
                                   (r(b, 1, H, Dh), wo), L),
        "mlp (1 layer)": (jax.jit(lambda x, g, u, dn: (jax.nn.silu(x @ g) * (x @ u)) @ dn),
                          (x, wg, wu, wd), L),
        "decode attention (1 layer)": (jax.jit(lambda q, k, v, m: _decode_attention(q, k, v, m, Dh, jnp.float32)),
                                       (q, ck, cv, mask), L),
        # 8 in-place writes in a loop (as in the engine's decode loop), per write.
        "cache write k, x8 in a loop (1 layer)": (jax.jit(scatter8), (ck, k_new, pos), 2 * L / 8),
        "lm_head (tied)": (jax.jit(lambda h, e: h[:, 0] @ e.T), (x, emb), 1),
        "sampling greedy": (jax.jit(sample), (logits, keys, greedy_t, no_k, no_p), 1),
        "sampling temperature": (jax.jit(sample), (logits, keys, temp_t, no_k, no_p), 1),
        "sampling top_p=0.9": (jax.jit(sample), (logits, keys, temp_t, no_k,
                                                 jnp.full((b,), 0.9, jnp.float32)), 1),
    }
    rows = {}
    total = 0.0
    for name, (fn, fargs, times) in parts.items():
        sec = best_time(fn, *fargs)
        fl, by = cost(fn, *fargs)
        ideal = max(fl / (gflops * 1e9), by / (gbs * 1e9))
        rows[name] = dict(ms=sec * 1e3, per_step_ms=sec * 1e3 * times, gflop=fl / 1e9, mb=by / 1e6,
                          roofline_share=ideal / sec, times_per_step=times)
        if "top_p" not in name and "temperature" not in name:
            total += sec * times
        print(f"{name:42s} {sec * 1e3:8.3f} ms x{times:5.1f} = {sec * times * 1e3:7.1f} ms/step "
              f"{fl / 1e9:7.3f} GFLOP {by / 1e6:8.1f} MB  roofline {ideal / sec:5.0%}", flush=True)
    print(f"sum of parts (greedy): {total * 1e3:.1f} ms/step", flush=True)

    # The engine's real decode step.
    tok = word_tokenizer(V)
    ecfg = cfg.engine.__class__(num_slots=b, max_seq_len=s, prefill_buckets=[128, s],
                                decode_steps_per_call=8, max_new_tokens=64, prefix_cache=False)
    engine = Engine(policy, tok, ecfg)
    params = SamplingParams(max_new_tokens=10_000, temperature=0.0)
    pf = engine.prefill(list(rng.randint(1, V, s - 64)))
    for slot in range(b):
        engine.insert(pf, slot, params)
    engine.core.ensure_cache_length(s)
    engine.decode()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        engine.decode()
        best = min(best, (time.perf_counter() - t) / ecfg.decode_steps_per_call)
    flops, nbytes = step_cost(arch, b, s, 4)
    ideal = max(flops / (gflops * 1e9), nbytes / (gbs * 1e9))
    print(f"engine decode step: {best * 1e3:.1f} ms; ideal {ideal * 1e3:.1f} ms "
          f"({flops / 1e9:.1f} GFLOP, {nbytes / 1e6:.0f} MB) -> {ideal / best:.0%} of the roofline",
          flush=True)
    print(json.dumps(dict(batch=b, cache=s, parts=rows, sum_ms=total * 1e3, engine_step_ms=best * 1e3,
                          ideal_ms=ideal * 1e3, machine=dict(gflops=gflops, gbs=gbs,
                                                             load=os.getloadavg()[0]))))


if __name__ == "__main__":
    main()
