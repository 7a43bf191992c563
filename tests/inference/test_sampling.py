"""Sampling statistics on logits with a known distribution."""

import jax
import jax.numpy as jnp
import numpy as np

from rstar_jax.inference.sampling import sample, slot_keys

PROBS = np.array([0.5, 0.3, 0.15, 0.05], np.float32)
DRAWS = 4000


def _draw(temperature, top_k, top_p, probs=PROBS):
    """DRAWS samples from one distribution, one slot per draw (own key each)."""
    logits = jnp.broadcast_to(jnp.log(jnp.asarray(probs)), (DRAWS, len(probs)))
    keys = slot_keys(jnp.full((DRAWS,), 7, jnp.int32), jnp.arange(DRAWS, dtype=jnp.int32),
                     jnp.zeros((DRAWS,), jnp.int32))
    toks, lps = jax.jit(sample)(logits, keys, jnp.full((DRAWS,), temperature, jnp.float32),
                                jnp.full((DRAWS,), top_k, jnp.int32), jnp.full((DRAWS,), top_p, jnp.float32))
    return np.asarray(toks), np.asarray(lps)


def _freq(toks, k=4):
    return np.bincount(toks, minlength=k) / len(toks)


def test_temperature_zero_and_top_k_one_are_greedy():
    rng = np.random.RandomState(0)
    logits = jnp.asarray(rng.randn(16, 50).astype(np.float32))
    keys = slot_keys(jnp.arange(16, dtype=jnp.int32), jnp.zeros(16, jnp.int32), jnp.zeros(16, jnp.int32))
    argmax = np.argmax(np.asarray(logits), -1)
    for temp, k in ((0.0, 0), (1.0, 1), (5.0, 1)):
        toks, lps = sample(logits, keys, jnp.full((16,), temp), jnp.full((16,), k, jnp.int32),
                           jnp.ones((16,)))
        np.testing.assert_array_equal(np.asarray(toks), argmax)
        ref = np.asarray(jax.nn.log_softmax(logits, -1))[np.arange(16), argmax]
        np.testing.assert_allclose(np.asarray(lps), ref, rtol=1e-6)


def test_unfiltered_sampling_follows_the_distribution():
    toks, lps = _draw(1.0, 0, 1.0)
    sigma = np.sqrt(PROBS * (1 - PROBS) / DRAWS)
    assert np.all(np.abs(_freq(toks) - PROBS) < 4 * sigma)
    np.testing.assert_allclose(lps, np.log(PROBS)[toks], rtol=1e-5)


def test_temperature_sharpens_as_softmax_of_scaled_logits():
    toks, _ = _draw(0.5, 0, 1.0)
    target = PROBS ** 2 / np.sum(PROBS ** 2)  # temperature 1/2 squares the odds
    assert np.all(np.abs(_freq(toks) - target) < 4 * np.sqrt(target * (1 - target) / DRAWS) + 1e-9)


def test_top_p_restricts_support_to_the_nucleus():
    # Mass before ranks 0..3: 0, .5, .8, .95 -> top_p=0.7 keeps {0, 1}; top_p=0.85 keeps {0, 1, 2}.
    toks, _ = _draw(1.0, 0, 0.7)
    assert set(np.unique(toks)) == {0, 1}
    target = np.array([0.5, 0.3, 0, 0]) / 0.8
    assert np.all(np.abs(_freq(toks) - target) < 4 * np.sqrt(target * (1 - target) / DRAWS) + 1e-9)
    toks, _ = _draw(1.0, 0, 0.85)
    assert set(np.unique(toks)) == {0, 1, 2}


def test_top_k_restricts_support_to_the_k_largest():
    toks, _ = _draw(1.0, 2, 1.0)
    assert set(np.unique(toks)) == {0, 1}
    toks, _ = _draw(1.0, 3, 0.7)  # both filters: the smaller set wins
    assert set(np.unique(toks)) == {0, 1}


def test_a_slots_draw_depends_only_on_its_own_seed_candidate_and_step():
    seed = jnp.array([3, 3, 9], jnp.int32)
    cand = jnp.array([0, 1, 0], jnp.int32)
    step = jnp.array([5, 5, 5], jnp.int32)
    keys = np.asarray(slot_keys(seed, cand, step))
    again = np.asarray(slot_keys(seed[::-1], cand[::-1], step[::-1]))[::-1]
    np.testing.assert_array_equal(keys, again)
    assert len({tuple(k) for k in keys}) == 3
