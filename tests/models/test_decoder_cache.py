"""The KV-cache path reproduces the full forward pass."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rstar_jax.config import load_config
from rstar_jax.models import PPM, ArchConfig, Policy, init_cache
from testutil import REPO


def _arch():
    return ArchConfig.from_model_config(load_config(str(REPO / "configs/models/tiny.yaml")).model)


def forward(model, tokens, positions=None, cache=None):
    return jax.jit(lambda m, t, p, c: m(t, p, cache=c))(model, tokens, positions, cache)


def test_incremental_decoding_matches_full_forward():
    arch = _arch()
    model = Policy(arch, rngs=nnx.Rngs(0))
    tokens = jnp.asarray(np.random.RandomState(0).randint(0, arch.vocab_size, (2, 10)), jnp.int32)
    full, none_cache = forward(model, tokens)
    assert none_cache is None and full.shape == (2, 10, arch.vocab_size)
    cache = init_cache(arch, 2, 16)
    first, cache = forward(model, tokens[:, :6], jnp.broadcast_to(jnp.arange(6), (2, 6)), cache)
    steps = [first]
    for t in range(6, 10):
        logits, cache = forward(model, tokens[:, t:t + 1], jnp.full((2, 1), t), cache)
        steps.append(logits)
    np.testing.assert_allclose(np.asarray(jnp.concatenate(steps, 1)), np.asarray(full), atol=1e-5)


def test_ppm_reads_the_last_real_token():
    arch = _arch()
    ppm = PPM(arch, rngs=nnx.Rngs(1))
    tokens = jnp.asarray(np.random.RandomState(1).randint(0, arch.vocab_size, (1, 7)), jnp.int32)
    padded = jnp.concatenate([tokens, jnp.zeros((1, 5), jnp.int32)], axis=1)
    score = jax.jit(lambda m, t, n: m(t, n))
    a = score(ppm, tokens, jnp.array([7]))
    b = score(ppm, padded, jnp.array([7]))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    assert not np.allclose(np.asarray(score(ppm, padded, jnp.array([6]))), np.asarray(a))
