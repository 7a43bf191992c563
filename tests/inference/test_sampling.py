"""Sampling statistics on logits with a known distribution."""

import jax
import jax.numpy as jnp
import numpy as np

from rstar_jax.inference.sampling import key_uniforms, sample, slot_keys, slot_uniforms

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


def test_blocked_argmax_matches_numpy_with_ties_padding_and_infs():
    from rstar_jax.inference.sampling import argmax

    rng = np.random.RandomState(1)
    x = rng.randint(-3, 3, size=(6, 700)).astype(np.float32)  # many ties; 700 is not a block multiple
    x[1] = -np.inf
    x[2, 699] = 10.0  # maximum in the padded last block
    x[3, :] = 1.0
    x[4, 5] = np.inf
    np.testing.assert_array_equal(np.asarray(argmax(jnp.asarray(x))), np.argmax(x, -1))


def test_candidate_thresholds_equal_the_sorted_ones_and_fall_back_when_too_small():
    from rstar_jax.inference.sampling import CANDIDATES, _thresholds_sorted, thresholds

    rng = np.random.RandomState(2)
    v = 1000
    peaked = rng.randn(8, v).astype(np.float32) * 6.0  # nuclei of a few tokens
    flat = rng.randn(8, v).astype(np.float32) * 0.1  # nuclei far past the candidates
    top_k = np.array([0, 1, 5, CANDIDATES, 0, 3, 0, 0], np.int32)
    top_p = np.array([0.9, 1.0, 1.0, 1.0, 0.5, 0.95, 0.99, 0.3], np.float32)
    for x, k in ((peaked, top_k), (flat, top_k), (peaked, top_k + 2 * CANDIDATES)):
        x, kk, pp = jnp.asarray(x), jnp.asarray(k), jnp.asarray(top_p)
        ref = np.asarray(_thresholds_sorted(x, kk, pp))
        got = np.asarray(jax.jit(thresholds)(x, kk, pp))
        np.testing.assert_allclose(got, ref, rtol=0, atol=0)
    # Kept-set sizes are what the filters ask for (no ties in random logits).
    kept = np.sum(peaked >= np.asarray(thresholds(jnp.asarray(peaked), jnp.asarray(top_k),
                                                   jnp.ones(8)))[:, None], -1)
    np.testing.assert_array_equal(kept, np.where(top_k > 0, top_k, v))


def test_draw_never_picks_a_filtered_token_and_handles_partial_blocks():
    from rstar_jax.inference.sampling import draw

    v, n = 300, 3000  # one full block and a padded one
    probs = np.zeros(v, np.float32)
    probs[[3, 255, 256, 299]] = [0.1, 0.2, 0.3, 0.4]
    logits = jnp.broadcast_to(jnp.log(jnp.asarray(probs) + 1e-30), (n, v))
    keys = slot_keys(jnp.full((n,), 5, jnp.int32), jnp.arange(n, dtype=jnp.int32), jnp.zeros((n,), jnp.int32))
    toks = np.asarray(jax.jit(draw)(logits, keys, jnp.full((n,), np.log(0.15), jnp.float32)))
    assert set(np.unique(toks)) == {255, 256, 299}
    target = np.array([0.2, 0.3, 0.4]) / 0.9
    freq = np.array([np.mean(toks == t) for t in (255, 256, 299)])
    assert np.all(np.abs(freq - target) < 4 * np.sqrt(target * (1 - target) / n))


def test_a_decode_calls_draws_are_the_per_token_keys_draws():
    """`slot_uniforms` (one pass per decode call) gives bit for bit the number
    each token's own key gives, so the tokens do not depend on the call size."""
    seed = jnp.asarray([3, 3, 9, 0], jnp.int32)
    cand = jnp.asarray([0, 1, 2, 5], jnp.int32)
    first = jnp.asarray([0, 17, 4, 300], jnp.int32)
    draws = np.asarray(slot_uniforms(seed, cand, first, 6))
    assert draws.shape == (6, 4)
    for t in range(6):
        one = np.asarray(key_uniforms(slot_keys(seed, cand, first + t)))
        np.testing.assert_array_equal(draws[t], one)
    assert len(set(draws.ravel().tolist())) == draws.size and ((draws >= 0) & (draws < 1)).all()


def test_order_keys_sort_like_the_floats_and_invert():
    from rstar_jax.inference.sampling import _from_key, _order_key

    x = np.array([-np.inf, -3e38, -1.5, -1e-40, -0.0, 0.0, 1e-45, 1e-40, 2.0, 3e38, np.inf], np.float32)
    keys = np.asarray(_order_key(jnp.asarray(x)))
    assert np.all(np.diff(keys.astype(np.int64)) > 0)  # -0.0 sorts just below +0.0
    back = np.asarray(_from_key(jnp.asarray(keys)))
    np.testing.assert_array_equal(back.view(np.uint32), x.view(np.uint32))


def _sorted_reference(logits, temperature, top_k, top_p, uniforms):
    """`sample`'s tokens with the thresholds of a full sort (the definition)."""
    from rstar_jax.inference.sampling import _thresholds_sorted, draw

    greedy = temperature <= 0
    scaled = logits / jnp.where(greedy, 1.0, temperature)[:, None]
    thresh = _thresholds_sorted(scaled, top_k, top_p)
    return np.where(np.asarray(greedy), np.argmax(np.asarray(logits), -1),
                    np.asarray(draw(scaled, None, thresh, uniforms)))


def test_search_thresholds_equal_the_sorted_ones_at_qwens_vocabulary():
    """Bit-identical thresholds, hence tokens, to the sorted definition at
    vocab 152064: ties, top_k=1, k past the vocabulary, top_p=1, tiny p,
    sets far larger than the candidates, row blocks that do not divide N."""
    from rstar_jax.inference.sampling import _search_thresholds, _thresholds_sorted

    rng = np.random.RandomState(3)
    v, n = 152064, 10
    x = rng.randn(n, v).astype(np.float32) * np.array([0.05, 1, 3, 8, 1, 1, 0.5, 2, 1, 1], np.float32)[:, None]
    x[4] = rng.randint(-4, 4, size=v)  # eight values, ~19k ties each
    x[5, rng.rand(v) < 0.5] = -np.inf  # a masked half
    x[8] = np.round(x[8], 1)  # ties among the top values too
    top_k = np.array([0, 1, 50, 0, 30000, 7, 0, v + 9, 1000, 0], np.int32)
    top_p = np.array([0.9, 1.0, 1.0, 1e-7, 1.0, 0.95, 0.999, 1.0, 0.3, 1.0], np.float32)
    xs, ks, ps = jnp.asarray(x), jnp.asarray(top_k), jnp.asarray(top_p)
    ref = np.asarray(jax.jit(_thresholds_sorted)(xs, ks, ps))
    for rows in (None, 3, n):
        got = np.asarray(jax.jit(_search_thresholds, static_argnums=3)(xs, ks, ps, rows))
        np.testing.assert_array_equal(got[:9], ref[:9])
        # Row 9 filters nothing: -inf here, the row minimum there; both keep every token.
        assert np.isneginf(got[9]) and ref[9] == x[9].min()
    kept = np.sum(x >= ref[:, None], -1)
    assert kept[1] == 1 and kept[2] == 50 and kept[3] == 1 and kept[7] == v
    assert kept[4] >= 30000 and kept[4] - np.sum(x[4] > ref[4]) > 1  # the tied level is kept whole


def test_sample_draws_the_sorted_versions_tokens_for_the_same_uniforms():
    from rstar_jax.inference.sampling import slot_uniforms

    rng = np.random.RandomState(4)
    v, n = 152064, 12
    logits = rng.randn(n, v).astype(np.float32) * 2.0
    logits[3] = np.round(logits[3])  # heavy ties
    temperature = np.array([0.0, 0.5, 1.0, 2.0, 1.0, 0.7, 1.3, 1.0, 0.0, 1.0, 0.9, 1.0], np.float32)
    top_k = np.array([0, 1, 0, 40, 0, 5000, 0, 64, 3, 100, 0, 0], np.int32)
    top_p = np.array([1.0, 1.0, 0.9, 0.95, 1e-6, 1.0, 0.8, 1.0, 0.5, 0.99, 0.97, 1.0], np.float32)
    args = [jnp.asarray(a) for a in (logits, temperature, top_k, top_p)]
    for seed in range(3):
        u = slot_uniforms(jnp.full((n,), seed, jnp.int32), jnp.arange(n, dtype=jnp.int32),
                          jnp.zeros((n,), jnp.int32), 1)[0]
        toks, _ = jax.jit(sample)(args[0], None, *args[1:], uniforms=u)
        np.testing.assert_array_equal(np.asarray(toks), _sorted_reference(*args, u))
    assert np.asarray(toks)[1] == np.argmax(logits[1])  # top_k=1 at temperature 0.5 is greedy
