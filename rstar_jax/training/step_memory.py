"""Per-device memory of one sharded SFT train step, from XLA's buffer assignment.

A layout for a pod (mesh axes, global batch, gradient accumulation, remat)
is arithmetic until it runs; this compiles the real train step
(`training.steps.make_train_step`: forward, backward, accumulation scan,
clipping, AdamW, state donated) on abstract, sharded shapes for the
devices at hand and reads `compiled.memory_analysis()`, which reports the
bytes of ONE device's program. Nothing is allocated, so a scaled-down
model of the target's proportions compiles on 8 fake CPU devices in
seconds and shows whether the per-device figures move as the arithmetic
says (benchmarks/RESULTS.md, the 7B layout).
"""

from __future__ import annotations

from typing import Dict, Mapping

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rstar_jax.config.schema import OptimConfig


def _abstract_sharded(tree, shardings):
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        tree, shardings)


def step_memory(arch, mesh: Mesh, rules: Mapping, *, global_batch: int, seq: int,
                accum: int = 1, remat: str = "none") -> Dict[str, int]:
    """Bytes per device of one SFT step of `arch` on `mesh`.

    Returns `arguments` (this device's shards of the parameters, AdamW
    moments and batch), `outputs`, `aliased` (outputs written into donated
    arguments), `temp` (activations and workspaces) and `peak` =
    arguments + outputs - aliased + temp.
    """
    from rstar_jax.models import Policy
    from rstar_jax.models.decoder import set_remat
    from rstar_jax.models.sharding import param_shardings
    from rstar_jax.training.state import batch_shardings
    from rstar_jax.training.steps import lm_loss, make_train_step, optimizer

    if global_batch % accum:
        raise ValueError(f"global batch {global_batch} does not divide into {accum} microbatches")
    model = nnx.eval_shape(lambda: set_remat(Policy(arch, rngs=nnx.Rngs(0)), remat))
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    p_sh = nnx.to_pure_dict(param_shardings(model, mesh, rules))
    tx = optimizer(OptimConfig(), total_steps=1000)
    opt_abstract = jax.eval_shape(tx.init, params)
    import optax

    rep = NamedSharding(mesh, PartitionSpec())
    opt_sh = optax.tree_map_params(tx, lambda _, sh: sh, opt_abstract, p_sh,
                                   transform_non_params=lambda _: rep)
    state_sh = {"params": p_sh, "opt_state": opt_sh, "step": rep}
    st = _abstract_sharded({"params": params, "opt_state": opt_abstract,
                            "step": jax.ShapeDtypeStruct((), jnp.int32)}, state_sh)
    probe = {k: jnp.zeros((1, seq), jnp.float32 if k == "weights" else jnp.int32)
             for k in ("inputs", "targets", "positions", "weights")}
    b_sh = batch_shardings(mesh, rules, probe, global_batch)
    batch = {k: jax.ShapeDtypeStruct((global_batch, seq), v.dtype, sharding=b_sh[k])
             for k, v in probe.items()}
    step = make_train_step(graphdef, lm_loss, tx, accum=accum, mesh=mesh, rules=rules,
                           state_shardings=state_sh, batch_shardings=b_sh)
    m = step.lower(st, batch).compile().memory_analysis()
    out = {"arguments": m.argument_size_in_bytes, "outputs": m.output_size_in_bytes,
           "aliased": m.alias_size_in_bytes, "temp": m.temp_size_in_bytes}
    out["peak"] = out["arguments"] + out["outputs"] - out["aliased"] + out["temp"]
    return out
