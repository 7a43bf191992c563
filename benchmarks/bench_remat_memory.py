"""Peak memory of an SFT train step with and without per-block remat
(`model.remat`), from XLA's own buffer assignment, never allocating the model.

Run: `PYTHONPATH=. python benchmarks/bench_remat_memory.py [--model configs/models/qwen2.5-math-1.5b.yaml]
[--seq 4096] [--batch 1] [--layers N]`.

The whole step (forward, backward, global-norm clipping, AdamW update; the
state donated as in training) is traced on abstract shapes
(`nnx.eval_shape`, `jax.ShapeDtypeStruct`) and compiled for one CPU
device; `compiled.memory_analysis()` gives the arguments (params + optimizer
state + batch), the outputs, the aliased (donated) bytes and the temporaries
(activations kept for the backward pass and workspaces). Peak =
arguments + outputs - aliased + temporaries. `--layers` compiles a shallower
model of the same width (the per-layer share then scales linearly).

XLA's CPU compiler schedules a rematerialised block's recomputation without
regard to memory (the optimisation barriers are gone from the compiled
program, and even a plain `jax.checkpoint` MLP's temporaries grow on CPU),
so its temporaries do not show what remat saves on an accelerator. The
residuals do: the activations `jax.vjp` keeps from the forward for the
backward pass, per policy, per block and outside the blocks (logits), read
from abstract shapes in seconds (`--no-compile` skips the compiles).
Last line: one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from rstar_jax.config import load_config  # noqa: E402
from rstar_jax.config.schema import OptimConfig  # noqa: E402
from rstar_jax.models import ArchConfig, Policy  # noqa: E402
from rstar_jax.models.decoder import set_remat  # noqa: E402
from rstar_jax.training.steps import lm_loss, make_train_step, optimizer  # noqa: E402

GIB = 1 << 30


def abstract_step(arch: ArchConfig, remat: str, seq: int, batch: int):
    """(jitted step, abstract state, abstract batch) of one SFT step."""
    model = nnx.eval_shape(lambda: set_remat(Policy(arch, rngs=nnx.Rngs(0)), remat))
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    tx = optimizer(OptimConfig(), total_steps=1000)
    opt_state = jax.eval_shape(tx.init, params)
    st = {"params": params, "opt_state": opt_state, "step": jax.ShapeDtypeStruct((), jnp.int32)}
    tok = jax.ShapeDtypeStruct((batch, seq), jnp.int32)
    b = {"inputs": tok, "targets": tok, "positions": tok,
         "weights": jax.ShapeDtypeStruct((batch, seq), jnp.float32)}
    return make_train_step(graphdef, lm_loss, tx), st, b


def residual_bytes(arch: ArchConfig, remat: str, seq: int, batch: int) -> int:
    """Bytes of the activations the backward pass keeps from the forward.

    The residuals of `jax.vjp` of the SFT loss, traced on abstract shapes:
    what a device holds between the forward and the backward pass. Only
    arrays with a sequence axis count (the weights the backward reads are
    residuals too, but they are the parameters, counted once as arguments).
    """
    model = nnx.eval_shape(lambda: set_remat(Policy(arch, rngs=nnx.Rngs(0)), remat))
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    tok = jax.ShapeDtypeStruct((batch, seq), jnp.int32)
    b = {"inputs": tok, "targets": tok, "positions": tok,
         "weights": jax.ShapeDtypeStruct((batch, seq), jnp.float32)}

    def vjp_fn(p, bb):
        return jax.vjp(lambda q: lm_loss(nnx.merge(graphdef, q), bb)[0], p)[1]

    res = jax.tree.leaves(jax.eval_shape(vjp_fn, params, b))
    return sum(a.size * jnp.dtype(a.dtype).itemsize for a in res if seq in a.shape)


def per_layer(arch: ArchConfig, remat: str, seq: int, batch: int) -> dict:
    """Residual GiB per decoder block and outside the blocks (logits, loss)."""
    one = residual_bytes(arch.replace(num_layers=1), remat, seq, batch)
    two = residual_bytes(arch.replace(num_layers=2), remat, seq, batch)
    return {"per_block_gib": round((two - one) / GIB, 4),
            "outside_blocks_gib": round((2 * one - two) / GIB, 4)}


def measure(arch: ArchConfig, remat: str, seq: int, batch: int, compile_: bool = True) -> dict:
    row = {"remat": remat,
           "residuals_gib": round(residual_bytes(arch, remat, seq, batch) / GIB, 3),
           **per_layer(arch, remat, seq, batch)}
    if not compile_:
        return row
    step, st, b = abstract_step(arch, remat, seq, batch)
    t0 = time.perf_counter()
    compiled = step.lower(st, b).compile()
    m = compiled.memory_analysis()
    args, out = m.argument_size_in_bytes, m.output_size_in_bytes
    alias, temp = m.alias_size_in_bytes, m.temp_size_in_bytes
    return {**row, "compile_s": round(time.perf_counter() - t0, 1),
            "arguments_gib": round(args / GIB, 3), "outputs_gib": round(out / GIB, 3),
            "aliased_gib": round(alias / GIB, 3), "temp_gib": round(temp / GIB, 3),
            "peak_gib": round((args + out - alias + temp) / GIB, 3)}


def cpu_remat_check() -> dict:
    """Temporaries (MiB) of an 8-layer tanh MLP's gradient on this backend,
    plain and with `jax.checkpoint` per layer: whether its compiler's
    buffer assignment shows what remat saves at all."""
    def layer(w, x):
        return jnp.tanh(x @ w)

    def net(w, x, fn):
        for i in range(8):
            x = fn(w[i], x)
        return jnp.sum(x)

    w = jax.ShapeDtypeStruct((8, 1024, 1024), jnp.float32)
    x = jax.ShapeDtypeStruct((4096, 1024), jnp.float32)
    out = {}
    for name, fn in (("plain", layer), ("checkpoint", jax.checkpoint(layer))):
        grad = jax.jit(jax.grad(lambda w_, x_, fn=fn: net(w_, x_, fn)))
        out[name] = grad.lower(w, x).compile().memory_analysis().temp_size_in_bytes / (1 << 20)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="configs/models/qwen2.5-math-1.5b.yaml")
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--layers", type=int, default=None, help="default: the model's")
    ap.add_argument("--policies", default="none,full,dots_saveable")
    ap.add_argument("--no-compile", action="store_true",
                    help="residuals only (seconds; the compiles take minutes at 1.5B)")
    a = ap.parse_args()
    arch = ArchConfig.from_model_config(load_config(a.model).model)
    if a.layers:
        arch = arch.replace(num_layers=a.layers)
    n_params = sum(x.size for x in jax.tree.leaves(
        nnx.to_pure_dict(nnx.split(nnx.eval_shape(lambda: Policy(arch, rngs=nnx.Rngs(0))))[1])))
    rows = []
    for policy in a.policies.split(","):
        rows.append(measure(arch, policy, a.seq, a.batch, not a.no_compile))
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["residuals_gib"]
    for r in rows:
        r["residuals_vs_first"] = round(r["residuals_gib"] / base, 3) if base else None
    print(f"{a.model}: {arch.num_layers} layers, {n_params / 1e9:.3f}B params, seq {a.seq}, "
          f"batch {a.batch}, {jnp.dtype(arch.param_dtype).name} params")
    print("| remat | residuals GiB | per block | outside blocks | vs first | arguments GiB "
          "| temporaries GiB (CPU) | peak GiB (CPU) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['remat']} | {r['residuals_gib']} | {r['per_block_gib']} "
              f"| {r['outside_blocks_gib']} | {r['residuals_vs_first']} "
              f"| {r.get('arguments_gib', '-')} | {r.get('temp_gib', '-')} "
              f"| {r.get('peak_gib', '-')} |")
    check = cpu_remat_check()
    print(f"8-layer MLP gradient on {jax.default_backend()}: temporaries {check['plain']:.0f} MiB "
          f"plain, {check['checkpoint']:.0f} MiB with jax.checkpoint")
    print(json.dumps({"model": a.model, "mlp_check_mib": check, "layers": arch.num_layers, "params": n_params,
                      "seq": a.seq, "batch": a.batch, "rows": rows}))


if __name__ == "__main__":
    main()
