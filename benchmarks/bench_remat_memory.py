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


def measure(arch: ArchConfig, remat: str, seq: int, batch: int) -> dict:
    step, st, b = abstract_step(arch, remat, seq, batch)
    t0 = time.perf_counter()
    compiled = step.lower(st, b).compile()
    m = compiled.memory_analysis()
    args, out = m.argument_size_in_bytes, m.output_size_in_bytes
    alias, temp = m.alias_size_in_bytes, m.temp_size_in_bytes
    return {"remat": remat, "compile_s": round(time.perf_counter() - t0, 1),
            "arguments_gib": round(args / GIB, 3), "outputs_gib": round(out / GIB, 3),
            "aliased_gib": round(alias / GIB, 3), "temp_gib": round(temp / GIB, 3),
            "peak_gib": round((args + out - alias + temp) / GIB, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="configs/models/qwen2.5-math-1.5b.yaml")
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--layers", type=int, default=None, help="default: the model's")
    ap.add_argument("--policies", default="none,full,dots_saveable")
    a = ap.parse_args()
    arch = ArchConfig.from_model_config(load_config(a.model).model)
    if a.layers:
        arch = arch.replace(num_layers=a.layers)
    n_params = sum(x.size for x in jax.tree.leaves(
        nnx.to_pure_dict(nnx.split(nnx.eval_shape(lambda: Policy(arch, rngs=nnx.Rngs(0))))[1])))
    rows = []
    for policy in a.policies.split(","):
        rows.append(measure(arch, policy, a.seq, a.batch))
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["temp_gib"]
    for r in rows:
        r["temp_vs_first"] = round(r["temp_gib"] / base, 3) if base else None
    print(f"{a.model}: {arch.num_layers} layers, {n_params / 1e9:.3f}B params, seq {a.seq}, "
          f"batch {a.batch}, {jnp.dtype(arch.param_dtype).name} params")
    print("| remat | arguments GiB | temporaries GiB | peak GiB | temp vs none |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['remat']} | {r['arguments_gib']} | {r['temp_gib']} | {r['peak_gib']} "
              f"| {r['temp_vs_first']} |")
    print(json.dumps({"model": a.model, "layers": arch.num_layers, "params": n_params,
                      "seq": a.seq, "batch": a.batch, "rows": rows}))


if __name__ == "__main__":
    main()
