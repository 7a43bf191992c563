"""Per-slot token sampling: greedy, temperature, top-k, top-p, per-request keys.

Every slot carries its own sampling parameters and its own PRNG stream, so a
request's samples never depend on what else shares the batch: the key of a
slot's `t`-th token is `fold_in(fold_in(PRNGKey(seed), candidate), t)`.

Shapes: N slots, V vocabulary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
_NEG = -1e30


def slot_keys(seed: Array, candidate: Array, step: Array) -> Array:
    """Raw PRNG keys `[N, 2]` for the `step`-th token of each slot (all `[N]`)."""

    def one(s, c, t):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(s), c), t)
        return key

    return jax.vmap(one)(seed, candidate, step)


def _filter(logits: Array, top_k: Array, top_p: Array) -> Array:
    """Masks logits `[N, V]` outside each row's top-k / nucleus (top-p) set.

    One descending sort serves both filters; the kept set is every logit at
    or above the larger of the two thresholds (ties at the threshold kept).
    `top_k <= 0` and `top_p >= 1` disable a filter for that row.
    """
    v = logits.shape[-1]
    srt = -jnp.sort(-logits, axis=-1)  # [N, V] descending
    k = jnp.where(top_k > 0, jnp.minimum(top_k, v), v)
    thresh_k = jnp.take_along_axis(srt, (k - 1)[:, None], axis=-1)[:, 0]
    probs = jax.nn.softmax(srt, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly before each rank
    keep = before < top_p[:, None]  # rank 0 is always kept
    last = jnp.maximum(jnp.sum(keep, axis=-1) - 1, 0)
    thresh_p = jnp.take_along_axis(srt, last[:, None], axis=-1)[:, 0]
    thresh_p = jnp.where(top_p >= 1.0, -jnp.inf, thresh_p)
    thresh = jnp.maximum(thresh_k, thresh_p)
    return jnp.where(logits >= thresh[:, None], logits, _NEG)


def sample(logits: Array, keys: Array, temperature: Array, top_k: Array,
           top_p: Array) -> tuple[Array, Array]:
    """Samples one token per slot.

    Args:
      logits: `[N, V]` float32 model logits.
      keys: `[N, 2]` raw PRNG keys (`slot_keys`).
      temperature, top_p: `[N]` float32; top_k: `[N]` int32.
        `temperature <= 0` is greedy.

    Returns:
      tokens `[N]` int32 and their log-probabilities `[N]` under the model's
      own distribution (temperature 1, unfiltered), so a completion's log-prob
      means the same thing whatever sampling settings produced it.
    """
    logprobs = jax.nn.log_softmax(logits, axis=-1)
    greedy = temperature <= 0.0
    safe_t = jnp.where(greedy, 1.0, temperature)
    scaled = logits / safe_t[:, None]
    needs_filter = jnp.any(((top_k > 0) | (top_p < 1.0)) & ~greedy)
    # The sort costs more than the rest of sampling: skip it unless a row asks.
    scaled = jax.lax.cond(needs_filter, lambda x: _filter(x, top_k, top_p), lambda x: x, scaled)

    def draw(x):
        gumbel = jax.vmap(lambda k: jax.random.gumbel(k, (x.shape[-1],), jnp.float32))(keys)
        return jnp.argmax(x + gumbel, axis=-1)

    # Random bits for a whole vocabulary per slot are not free on a CPU either.
    sampled = jax.lax.cond(jnp.all(greedy), lambda x: jnp.argmax(x, axis=-1), draw, scaled)
    tokens = jnp.where(greedy, jnp.argmax(logits, axis=-1), sampled).astype(jnp.int32)
    return tokens, jnp.take_along_axis(logprobs, tokens[:, None], axis=-1)[:, 0]
