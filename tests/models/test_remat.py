"""Per-block rematerialisation (`model.remat`): the same loss and gradients,
recomputation actually in the backward pass, and a bad policy refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rstar_jax.config import load_config
from rstar_jax.models import ArchConfig, Policy
from rstar_jax.models.decoder import set_remat
from rstar_jax.training.state import split_params
from rstar_jax.training.steps import lm_loss
from testutil import REPO


def _arch():
    return ArchConfig.from_model_config(load_config(str(REPO / "configs/models/tiny.yaml")).model)


def _batch(arch):
    rs = np.random.RandomState(0)
    toks = jnp.asarray(rs.randint(0, arch.vocab_size, (2, 12)), jnp.int32)
    return {"inputs": toks, "targets": jnp.roll(toks, -1, axis=1),
            "positions": jnp.broadcast_to(jnp.arange(12), (2, 12)),
            "weights": jnp.ones((2, 12), jnp.float32)}


def _grad_fn(policy):
    model = set_remat(Policy(_arch(), rngs=nnx.Rngs(0)), policy)
    graphdef, params = split_params(model)

    def loss(p, batch):
        return lm_loss(nnx.merge(graphdef, p), batch)[0]

    return jax.value_and_grad(loss), params


@pytest.mark.parametrize("policy", ["full", "dots_saveable"])
def test_remat_gives_the_same_loss_and_gradients(policy):
    batch = _batch(_arch())
    ref_fn, params = _grad_fn("none")
    fn, params2 = _grad_fn(policy)
    (l0, g0), (l1, g1) = jax.jit(ref_fn)(params, batch), jax.jit(fn)(params2, batch)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    # Recomputation lets XLA fuse (and so round) the backward pass's float32
    # sums differently: equal to 1e-4 of each gradient's largest entry.
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-4 * float(jnp.max(jnp.abs(a))))


@pytest.mark.parametrize("policy,blocks", [("none", 0), ("full", 2), ("dots_saveable", 2)])
def test_each_block_is_rematerialised(policy, blocks):
    """One remat region per decoder block (tiny: 2 layers), none without."""
    fn, params = _grad_fn(policy)
    jaxpr = jax.make_jaxpr(fn)(params, _batch(_arch()))
    names = [e.primitive.name for e in jaxpr.jaxpr.eqns]
    assert sum(n in ("checkpoint", "remat", "remat2") for n in names) == blocks, names


def test_cache_path_and_bad_policy():
    arch = _arch()
    model = set_remat(Policy(arch, rngs=nnx.Rngs(0)), "full")
    assert model.model.remat == "full"
    with pytest.raises(ValueError, match="model.remat"):
        set_remat(model, "dots")
