"""Per-slot token sampling: greedy, temperature, top-k, top-p, per-request keys.

Every slot carries its own sampling parameters and its own PRNG stream, so a
request's samples never depend on what else shares the batch: the key of a
slot's `t`-th token is `fold_in(fold_in(PRNGKey(seed), candidate), t)`.

Written for XLA:CPU, where a decode step's sampling over a 49k vocabulary
used to cost as much as a third of the model (issue 4, measured at batch 64):
  * argmax is a max plus a min over matching indices (XLA's variadic argmax
    reduction does not vectorise: 14 ms vs well under 1 ms at [64, 49152]);
  * a draw is one uniform per row and an inverse-CDF search over block sums
    (a Gumbel-max draw needs V random numbers per row: ~35 ms);
  * top-k / top-p thresholds come from `lax.top_k` candidates (5 ms); a row
    whose set does not fit in them is searched by bisection over the logits'
    order keys (`_search_thresholds`), not a full-vocabulary sort (issue 24:
    at [64, 152064] on a CPU 3.2 s sorted, ~0.2-0.5 s searched).

Shapes: N slots, V vocabulary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
_NEG = -1e30
CANDIDATES = 64  # top-k / nucleus sets up to this size need no sort
_BLOCK = 256  # inverse-CDF search: block sums, then one block
_CPU_ROWS = 8  # threshold search on XLA:CPU: rows at a time (their logits stay in cache)


def slot_keys(seed: Array, candidate: Array, step: Array) -> Array:
    """Raw PRNG keys `[N, 2]` for the `step`-th token of each slot (all `[N]`)."""

    def one(s, c, t):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(s), c), t)
        return key

    return jax.vmap(one)(seed, candidate, step)


def key_uniforms(keys: Array) -> Array:
    """One uniform in [0, 1) per raw key: `[N, 2] -> [N]` float32 (`draw`'s number)."""
    return jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float32))(keys)


def slot_uniforms(seed: Array, candidate: Array, first_step: Array, steps: int) -> Array:
    """The draws of each slot's tokens `first_step .. first_step + steps - 1`.

    The same numbers as `key_uniforms(slot_keys(seed, candidate, step))` step
    by step, computed for a whole decode call in one vectorised pass: on
    XLA:CPU every threefry call lowers to a rolled loop of small ops, and
    three of them per token (two `fold_in`s, one `uniform`) were about half
    of the ~300 ops of the demo model's decode step. Inputs `[N]`; returns
    `[steps, N]` float32.
    """
    counts = first_step[None, :] + jnp.arange(steps, dtype=first_step.dtype)[:, None]  # [steps, N]
    flat = lambda a: jnp.broadcast_to(a[None, :], counts.shape).reshape(-1)  # noqa: E731
    keys = slot_keys(flat(seed), flat(candidate), counts.reshape(-1))
    return key_uniforms(keys).reshape(counts.shape)


def _blocks(x: Array, fill: float) -> Array:
    """`[N, V]` -> `[N, ceil(V / _BLOCK), _BLOCK]`, padded at the end with `fill`."""
    n, v = x.shape
    nb = -(-v // _BLOCK)
    return jnp.pad(x, ((0, 0), (0, nb * _BLOCK - v)), constant_values=fill).reshape(n, nb, _BLOCK)


def argmax(x: Array) -> Array:
    """First index of each row's maximum, `[N, V] -> [N]` int32 (as `jnp.argmax`
    for rows without NaN): block maxima, then the first block and the first
    index within it that hold the row maximum (a flat variadic argmax does not
    vectorise on XLA:CPU: 14 ms vs 0.4 ms at [64, 49152])."""
    v = x.shape[-1]
    xb = _blocks(x, -jnp.inf)
    nb = xb.shape[1]
    bmax = jnp.max(xb, axis=-1)  # [N, nb]
    top = jnp.max(bmax, axis=-1, keepdims=True)
    blk = jnp.min(jnp.where(bmax == top, jnp.arange(nb), nb), axis=-1)
    blk = jnp.minimum(blk, nb - 1)
    inner = jnp.take_along_axis(xb, blk[:, None, None], axis=1)[:, 0]  # [N, BLOCK]
    idx = jnp.min(jnp.where(inner == top, jnp.arange(_BLOCK), _BLOCK), axis=-1)
    return jnp.minimum(blk * _BLOCK + idx, v - 1).astype(jnp.int32)


def _thresholds_sorted(scaled: Array, top_k: Array, top_p: Array) -> Array:
    """Each row's top-k / nucleus (top-p) threshold on `scaled` `[N, V]` -> `[N]`.

    The definition, by a full sort: `sample` never calls it (see
    `thresholds`); the tests and `benchmarks/bench_sampling.py` hold the fast
    paths to it.

    The kept set is every logit at or above the larger of the two thresholds
    (ties at the threshold kept). One descending sort serves both filters.
    `top_k <= 0` and `top_p >= 1` disable a filter for that row (-inf).
    """
    v = scaled.shape[-1]
    srt = -jnp.sort(-scaled, axis=-1)  # [N, V] descending
    k = jnp.where(top_k > 0, jnp.minimum(top_k, v), v)
    thresh_k = jnp.take_along_axis(srt, (k - 1)[:, None], axis=-1)[:, 0]
    probs = jax.nn.softmax(srt, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly before each rank
    keep = before < top_p[:, None]  # rank 0 is always kept
    last = jnp.maximum(jnp.sum(keep, axis=-1) - 1, 0)
    thresh_p = jnp.take_along_axis(srt, last[:, None], axis=-1)[:, 0]
    thresh_p = jnp.where(top_p >= 1.0, -jnp.inf, thresh_p)
    return jnp.maximum(thresh_k, thresh_p)


def _candidate_thresholds(scaled: Array, top_k: Array, top_p: Array):
    """`_thresholds_sorted` from the `CANDIDATES` largest logits only.

    Returns (thresh `[N]`, exact `[N]` bool): `exact` is false for a row whose
    top-k exceeds the candidates or whose nucleus reaches past them (the
    same rank rule as `_thresholds_sorted`, so where exact the sets agree).
    """
    v = scaled.shape[-1]
    c = min(CANDIDATES, v)
    vals, _ = jax.lax.top_k(scaled, c)  # [N, c] descending
    k = jnp.where(top_k > 0, jnp.minimum(top_k, v), v)
    thresh_k = jnp.take_along_axis(vals, (jnp.minimum(k, c) - 1)[:, None], axis=-1)[:, 0]
    thresh_k = jnp.where(top_k > 0, thresh_k, -jnp.inf)
    probs = jnp.exp(vals - jax.nn.logsumexp(scaled, axis=-1, keepdims=True))
    cum = jnp.cumsum(probs, axis=-1)
    keep = (cum - probs) < top_p[:, None]
    last = jnp.maximum(jnp.sum(keep, axis=-1) - 1, 0)
    thresh_p = jnp.take_along_axis(vals, last[:, None], axis=-1)[:, 0]
    thresh_p = jnp.where(top_p >= 1.0, -jnp.inf, thresh_p)
    exact = ((top_k <= 0) | (k <= c)) & ((top_p >= 1.0) | (cum[:, -1] >= top_p))
    return jnp.maximum(thresh_k, thresh_p), exact


def _order_key(x: Array) -> Array:
    """float32 -> uint32 whose unsigned order is the floats' order (NaN aside):
    a non-negative float gets its sign bit set, a negative one all bits flipped."""
    b = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    return jnp.where((b >> 31) == 1, ~b, b | jnp.uint32(0x80000000))


def _from_key(u: Array) -> Array:
    """The inverse of `_order_key`."""
    b = jnp.where((u >> 31) == 1, u & jnp.uint32(0x7FFFFFFF), ~u)
    return jax.lax.bitcast_convert_type(b, jnp.float32)


def _bisect(ok, lo: Array, hi: Array) -> Array:
    """The largest uint32 key `t` in `[lo, hi]` (per row) with `ok(t)`, for a
    predicate `ok(keys [N]) -> [N] bool` that holds at `lo` and, once false,
    stays false as `t` grows. At most 32 rounds; a row with lo == hi is done."""

    def body(state):
        lo, hi = state
        d = hi - lo
        mid = lo + (d >> 1) + (d & 1)  # upper middle, never leaving uint32
        good = ok(mid)
        return jnp.where(good, mid, lo), jnp.where(good, hi, mid - 1)

    lo, _ = jax.lax.while_loop(lambda s: jnp.any(s[0] < s[1]), body, (lo, hi))
    return lo


def _search_rows(x: Array, top_k: Array, top_p: Array) -> Array:
    """`_search_thresholds` on a block of rows, every row at once."""
    v = x.shape[-1]
    top = jnp.max(x, axis=-1)
    lo, hi = _order_key(jnp.min(x, axis=-1)), _order_key(top)  # both answers lie in [lo, hi]
    k = jnp.minimum(top_k, v)
    kth = _bisect(lambda t: jnp.sum(x >= _from_key(t)[:, None], axis=-1, dtype=jnp.int32) >= k,
                  lo, jnp.where(top_k > 0, hi, lo))
    w = jnp.exp(x - top[:, None])  # softmax numerators
    need = top_p * jnp.sum(w, axis=-1)  # the nucleus' numerators must reach this
    nucleus = _bisect(lambda t: jnp.sum(jnp.where(x >= _from_key(t)[:, None], w, 0.0), axis=-1) >= need,
                      lo, jnp.where(top_p < 1.0, hi, lo))
    thresh_k = jnp.where(top_k > 0, _from_key(kth), -jnp.inf)
    thresh_p = jnp.where(top_p < 1.0, _from_key(nucleus), -jnp.inf)
    return jnp.maximum(thresh_k, thresh_p)


def _search_thresholds(scaled: Array, top_k: Array, top_p: Array, rows: int | None = None) -> Array:
    """`_thresholds_sorted` by bisection instead of a sort (any set size).

    The top-k threshold is the largest value `t` with `count(x >= t) >= k`
    (the k-th largest, ties included); the nucleus threshold the largest `t`
    with `mass(x >= t) >= p`. Both counts fall as `t` grows and both maxima
    are logits themselves, so a bisection over the order-preserving uint32
    image of float32 (`_order_key`) finds them exactly in at most 32 passes
    over the row, each a compare and a sum that XLA fuses (the vLLM and
    sglang-jax samplers avoid the full-vocabulary sort the same way). A
    filter that no row uses costs no pass.

    `rows`: rows searched at a time, one block after another. On XLA:CPU
    blocks of `_CPU_ROWS` keep their logits in cache across the passes (2-3x
    faster than all rows at once at [64..256, 152064]); elsewhere all rows
    go together (default).
    """
    n, v = scaled.shape
    x = scaled.astype(jnp.float32)
    if rows is None:
        rows = _CPU_ROWS if jax.default_backend() == "cpu" else n
    if rows >= n:
        return _search_rows(x, top_k, top_p).astype(scaled.dtype)
    pad = -n % rows  # padded rows use no filter: converged from the start
    blocks = (jnp.pad(x, ((0, pad), (0, 0))).reshape(-1, rows, v),
              jnp.pad(top_k, (0, pad)).reshape(-1, rows),
              jnp.pad(top_p, (0, pad), constant_values=1.0).reshape(-1, rows))
    out = jax.lax.map(lambda b: _search_rows(*b), blocks).reshape(-1)
    return out[:n].astype(scaled.dtype)


def thresholds(scaled: Array, top_k: Array, top_p: Array) -> Array:
    """`_thresholds_sorted` without a sort: from the `CANDIDATES` largest
    logits when every row's set fits them, else by `_search_thresholds`."""
    thresh, exact = _candidate_thresholds(scaled, top_k, top_p)
    return jax.lax.cond(jnp.all(exact), lambda x: thresh,
                        lambda x: _search_thresholds(x, top_k, top_p), scaled)


def draw(scaled: Array, keys: Array, thresh: Array, uniforms: Array | None = None) -> Array:
    """One sample per row from softmax(scaled) restricted to `scaled >= thresh`.

    scaled `[N, V]`, keys `[N, 2]` (or their `uniforms` `[N]`, given: see
    `slot_uniforms`), thresh `[N]` (-inf: no filter) -> `[N]` int32.
    Inverse CDF with one uniform per row: find the block of `_BLOCK` tokens
    whose cumulative mass crosses it, then the token inside that block.
    Tokens with zero weight (filtered, or underflowing `exp`) are never drawn.
    """
    xb = _blocks(scaled, _NEG)
    nb = xb.shape[1]
    w = jnp.exp(xb - jnp.max(xb, axis=(1, 2), keepdims=True))
    w = jnp.where(xb >= thresh[:, None, None], w, 0.0)  # [N, nb, BLOCK]
    cum = jnp.cumsum(jnp.sum(w, axis=-1), axis=-1)  # [N, nb]
    u = (key_uniforms(keys) if uniforms is None else uniforms) * cum[:, -1]
    blk = jnp.minimum(jnp.sum(cum <= u[:, None], axis=-1), nb - 1)
    before = jnp.where(blk > 0, jnp.take_along_axis(cum, jnp.maximum(blk - 1, 0)[:, None], -1)[:, 0], 0.0)
    inner = jnp.take_along_axis(w, blk[:, None, None], axis=1)[:, 0]  # [N, BLOCK]
    icum = before[:, None] + jnp.cumsum(inner, axis=-1)
    idx = jnp.sum(icum <= u[:, None], axis=-1)
    # Rounding can leave u past the block's own running sum: take its last live token.
    last_live = jnp.max(jnp.where(inner > 0, jnp.arange(_BLOCK), 0), axis=-1)
    return (blk * _BLOCK + jnp.minimum(idx, last_live)).astype(jnp.int32)


def sample(logits: Array, keys: Array | None, temperature: Array, top_k: Array,
           top_p: Array, uniforms: Array | None = None) -> tuple[Array, Array]:
    """Samples one token per slot.

    Args:
      logits: `[N, V]` float32 model logits.
      keys: `[N, 2]` raw PRNG keys (`slot_keys`), or None with `uniforms`.
      temperature, top_p: `[N]` float32; top_k: `[N]` int32.
        `temperature <= 0` is greedy.
      uniforms: `[N]` the keys' draws, precomputed (`slot_uniforms`).

    Returns:
      tokens `[N]` int32 and their log-probabilities `[N]` under the model's
      own distribution (temperature 1, unfiltered), so a completion's log-prob
      means the same thing whatever sampling settings produced it.
    """
    greedy = temperature <= 0.0
    best = argmax(logits)

    def sampled(x):
        scaled = x / jnp.where(greedy, 1.0, temperature)[:, None]
        needs_filter = jnp.any(((top_k > 0) | (top_p < 1.0)) & ~greedy)
        # Conditionals return thresholds `[N]`, never a `[N, V]` array to copy.
        thresh = jax.lax.cond(needs_filter, lambda s: thresholds(s, top_k, top_p),
                              lambda s: jnp.full(s.shape[:1], -jnp.inf, s.dtype), scaled)
        return jnp.where(greedy, best, draw(scaled, keys, thresh, uniforms))

    # A batch of greedy rows needs neither the scaling nor the random draw.
    tokens = jax.lax.cond(jnp.all(greedy), lambda x: best, sampled, logits)
    picked = jnp.take_along_axis(logits, tokens[:, None], axis=-1)[:, 0]
    return tokens, picked - jax.nn.logsumexp(logits, axis=-1)
