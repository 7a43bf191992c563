"""Attention of one new token per row over its decode cache, chosen per backend (issue 17).

q `[B, K, G, Dh]` (the row's query heads grouped by their key/value head),
the cache `ck, cv [B, K, S, Dh]` already holding this step's keys/values,
positions `[B]` (the query's own position: row b reads keys `0..pos[b]`).
Entries past a row's position may be stale (an earlier request, padding)
and are never read into the result. Three paths:

* ``full``: a masked softmax over the whole cache. Fastest on CPU: at the
  135M shape, batch 64, S 256 (positions 128-191) a blocked loop over only
  the filled key blocks, or a switch over prefix lengths, cost 2.0-3.3x the
  CPU time of the full pass, because XLA:CPU copies every sliced block before
  its dot; a dense cache of 192 keys would save only 14% of it.
* ``blocked``: an online softmax over key blocks up to the largest position
  of the call (a loop with a data-dependent trip count, like the prefill's),
  so the step reads only the filled part of the cache: on TPU, and on GPUs
  where the kernel below cannot run.
* ``pallas``: jax's Pallas (Triton) GQA decode kernel
  (`jax.experimental.pallas.ops.gpu.decode_attention.gqa`) with each row's
  key length, which skips the key blocks past each row's own position. On
  GPU, for bfloat16/float16 caches on one device (a `pallas_call` is not
  split by the SPMD partitioner), when the cache length splits into blocks
  the kernel takes and a probe compile of it succeeds; else ``blocked``.
  Its cache layout is ours: the kernel swaps `[B, S, K, Dh]` back to
  `[B, K, S, Dh]`, so our swap in and its swap out cancel (no copy).

`decode_attention_path(...)` forces a path (tests, benchmarks; ``pallas``
then runs in Pallas' interpreter off GPU); the choice is made when the
decode step is traced. `paths_used()` says which paths were traced.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
from typing import Optional, Tuple

import jax
import jax.numpy as jnp

from rstar_jax.models.sharding import current_context

log = logging.getLogger(__name__)
Array = jax.Array

PATHS = ("full", "blocked", "pallas")
DECODE_KEY_BLOCK = 128

# (path or "auto", key block of the blocked path)
_FORCED: contextvars.ContextVar = contextvars.ContextVar("decode_attention_path",
                                                         default=("auto", DECODE_KEY_BLOCK))
_USED: dict = {}


@contextlib.contextmanager
def decode_attention_path(path: str = "auto", block: int = DECODE_KEY_BLOCK):
    """Within it, decode steps traced use `path` (``auto`` picks per backend)
    and the blocked path reads keys in blocks of `block`."""
    if path not in ("auto", *PATHS):
        raise ValueError(f"decode attention path {path!r} is not one of auto, {', '.join(PATHS)}")
    if block < 1:
        raise ValueError(f"decode attention key block must be >= 1, got {block}")
    token = _FORCED.set((path, int(block)))
    try:
        yield
    finally:
        _FORCED.reset(token)


def paths_used() -> dict:
    """`{path: [shape descriptions]}` of the decode attentions traced so far."""
    out: dict = {}
    for (path, desc) in _USED:
        out.setdefault(path, []).append(desc)
    return {k: sorted(v) for k, v in out.items()}


def decode_attention(q: Array, ck: Array, cv: Array, positions: Array, dtype) -> Array:
    """`[B, K, G, Dh]` attention output of one query per row (see the module doc)."""
    forced, block = _FORCED.get()
    path = forced if forced != "auto" else _auto_path(q, ck, dtype)
    if path == "pallas" and _pallas_split(ck.shape[2]) is None:
        path = "blocked"  # a cache length the kernel's blocks cannot tile
    b, kh, g, dh = q.shape
    _USED[(path, f"B{b} K{kh} G{g} S{ck.shape[2]} Dh{dh} {jnp.dtype(ck.dtype).name}")] = True
    if path == "pallas":
        return _pallas(q, ck, cv, positions, dtype, interpret=jax.default_backend() != "gpu")
    if path == "blocked":
        return _blocked(q, ck, cv, positions, dtype, block)
    mask = jnp.arange(ck.shape[2])[None, :] <= positions[:, None]
    return full_decode_attention(q, ck.astype(dtype), cv.astype(dtype), mask, dh, dtype)


def gather_pages(pool: Array, pages: Array) -> Array:
    """Each row's pages as a dense cache: `[P, K, ps, Dh]` through `[B, M]` ->
    `[B, K, M * ps, Dh]` (an XLA gather)."""
    _, kh, ps, dh = pool.shape
    b, m = pages.shape
    rows = jnp.take(pool, pages, axis=0, mode="clip")  # [B, M, K, ps, Dh]
    return jnp.transpose(rows, (0, 2, 1, 3, 4)).reshape(b, kh, m * ps, dh)


def paged_decode_attention(q: Array, pool_k: Array, pool_v: Array, pages: Array, positions: Array,
                           dtype) -> Array:
    """`[B, K, G, Dh]` attention of one query per row over its pages: q
    `[B, K, G, Dh]`, pools `[P, K, ps, Dh]`, page tables `[B, M]`."""
    ck, cv = gather_pages(pool_k, pages), gather_pages(pool_v, pages)
    return decode_attention(q, ck, cv, positions, dtype)


def _auto_path(q, ck, dtype) -> str:
    backend = jax.default_backend()
    if backend == "cpu":
        return "full"
    ctx = current_context()
    if (backend == "gpu" and (ctx is None or ctx[0].size == 1)
            and jnp.dtype(ck.dtype) == jnp.dtype(dtype)
            and jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
            and _pallas_split(ck.shape[2]) is not None
            and _pallas_compiles(tuple(q.shape), tuple(ck.shape), jnp.dtype(dtype).name)):
        return "pallas"
    return "blocked"


def full_decode_attention(q: Array, keys: Array, values: Array, mask: Array, head_dim: int,
                          dtype) -> Array:
    """The whole cache, masked: q `[B, K, G, Dh]`, keys/values `[B, K, S, Dh]`,
    mask `[B, S]` -> `[B, K, G, Dh]`.

    The scores come out as `[B, K, S, G]` (the cache as the dot's left
    operand), the form XLA:CPU runs fastest; the barrier keeps XLA from
    folding the transpose that follows into the dot (which makes it a 3x
    slower `[B, K, G, S]` dot). At batch 64, S 256 this measured 1.4-1.5 ms
    per layer against 2.3-2.4 ms for a broadcast multiply-reduce over the
    former `[B, S, K, Dh]` cache and 2.0 ms without the barrier (issue 4).
    """
    scores = jnp.einsum("bksh,bkgh->bksg", keys, q * jnp.asarray(head_dim ** -0.5, q.dtype),
                        preferred_element_type=jnp.float32)
    scores = jnp.swapaxes(jax.lax.optimization_barrier(scores), 2, 3)  # [B, K, G, S]
    scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
    return jnp.einsum("bkgs,bksh->bkgh", probs, values)


def online_softmax_block(carry, scores: Array, mask: Array, values: Array, dtype):
    """One key block of an online softmax (shared by the blocked decode and
    the prefill attention): carry (running max `[..., Q, 1]`, denominator
    `[..., Q, 1]`, accumulator `[..., Q, Dh]`, float32); `scores [..., Q, S]`
    float32, `mask` broadcastable to them, `values [..., S, Dh]`."""
    m, denom, acc = carry
    sc = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    m_new = jnp.maximum(m, sc.max(-1, keepdims=True))
    p = jnp.where(mask, jnp.exp(sc - m_new), 0.0)
    scale = jnp.exp(m - m_new)
    denom = denom * scale + p.sum(-1, keepdims=True)
    acc = acc * scale + jnp.einsum("...qs,...sh->...qh", p.astype(dtype), values,
                                   preferred_element_type=jnp.float32)
    return m_new, denom, acc


def online_softmax(num_blocks, body, lead: Tuple[int, ...], dh: int, dtype) -> Array:
    """Runs `body(i, carry) -> carry` (one `online_softmax_block` per key
    block) over `num_blocks` blocks from an empty carry whose accumulator is
    `[*lead, Dh]`; returns the normalised output `[*lead, Dh]` in `dtype`."""
    neg = jnp.finfo(jnp.float32).min
    init = (jnp.full((*lead, 1), neg, jnp.float32), jnp.zeros((*lead, 1), jnp.float32),
            jnp.zeros((*lead, dh), jnp.float32))
    _, denom, acc = jax.lax.fori_loop(0, num_blocks, body, init)
    return (acc / jnp.maximum(denom, 1e-30)).astype(dtype)


def _blocked(q, ck, cv, positions, dtype, block):
    """Online softmax over key blocks `[0, max(positions)]` of every row."""
    b, kh, g, dh = q.shape
    s = ck.shape[2]
    blk = min(block, s)
    if s % blk:
        blk = s  # a cache length the block does not divide: one block
    end = jnp.minimum(jnp.max(positions) + 1, s)
    qs = (q * jnp.asarray(dh ** -0.5, q.dtype)).astype(dtype)
    qpos = positions[:, None, None, None]

    def body(i, carry):
        start = i * blk
        kb = jax.lax.dynamic_slice_in_dim(ck, start, blk, 2).astype(dtype)
        vb = jax.lax.dynamic_slice_in_dim(cv, start, blk, 2).astype(dtype)
        sc = jnp.einsum("bksh,bkgh->bkgs", kb, qs, preferred_element_type=jnp.float32)
        mask = (start + jnp.arange(blk))[None, None, None, :] <= qpos
        return online_softmax_block(carry, sc, mask, vb, dtype)

    return online_softmax((end + blk - 1) // blk, body, (b, kh, g), dh, dtype)


def _pallas_split(s: int) -> Optional[Tuple[int, int]]:
    """(k_splits, block_k) tiling `s` keys for the kernel: each split a power
    of two of at least 16 keys (Triton block shapes), about 16 splits."""
    for splits in (16, 12, 8, 6, 4, 3, 2, 1):
        if s % splits == 0:
            per = s // splits
            if per >= 16 and per & (per - 1) == 0:
                return splits, min(128, per)
    return None


def _pallas(q, ck, cv, positions, dtype, *, interpret: bool):
    from jax.experimental.pallas.ops.gpu import decode_attention as kernels

    b, kh, g, dh = q.shape
    s = ck.shape[2]
    splits, block = _pallas_split(s)
    lengths = jnp.clip(positions + 1, 1, s).astype(jnp.int32)
    out = kernels.gqa(q.reshape(b, kh * g, dh).astype(ck.dtype), jnp.swapaxes(ck, 1, 2),
                      jnp.swapaxes(cv, 1, 2), kv_seq_len=lengths, k_splits=splits, block_k=block,
                      interpret=interpret)
    return out.reshape(b, kh, g, dh).astype(dtype)


@functools.lru_cache(maxsize=64)
def _pallas_compiles(q_shape, cache_shape, dtype: str) -> bool:
    """Whether the kernel compiles for these shapes here (once per shape): a
    JAX version, Triton or card that cannot run it falls back to XLA."""
    try:
        q = jax.ShapeDtypeStruct(q_shape, jnp.dtype(dtype))
        c = jax.ShapeDtypeStruct(cache_shape, jnp.dtype(dtype))
        pos = jax.ShapeDtypeStruct(q_shape[:1], jnp.int32)
        fn = functools.partial(_pallas, dtype=jnp.dtype(dtype), interpret=False)
        jax.jit(fn).lower(q, c, c, pos).compile()
        return True
    except Exception as e:  # noqa: BLE001 - any failure means: use XLA
        log.warning("pallas decode attention unavailable for q %s cache %s %s (%s: %s); using XLA",
                    q_shape, cache_shape, dtype, type(e).__name__, str(e)[:200])
        return False
