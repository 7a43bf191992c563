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

Over a page pool (`engine.kv_layout=paged`, `paged_decode_attention`) three
more paths: ``gather`` (an XLA gather of each row's pages into its dense
layout, then one of the paths above: on CPU the fastest, and bit-identical
to the dense engine), ``paged_gpu`` (jax's Pallas/Triton paged kernel,
`jax.experimental.pallas.ops.gpu.paged_attention`) and ``paged_tpu`` (jax's
Mosaic kernel, `...ops.tpu.paged_attention`); on GPU / TPU the kernel when a
probe compile of it succeeds (else ``gather`` and a WARNING with the error).

`decode_attention_path(...)` forces a path (tests, benchmarks; the kernels
then run in Pallas' interpreter off their backend); the choice is made when
the decode step is traced, and the engine makes the forced path part of its
decode's jit key (`forced_path`). `paths_used()` says which paths were
traced in this process; `recording(d)` also records them into `d` (each
engine keeps its own).
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

PATHS = ("full", "blocked", "pallas")  # over a dense cache
DENSE_PATHS = PATHS
PAGED_KERNELS = ("paged_gpu", "paged_tpu")
PAGED_PATHS = ("gather", *PAGED_KERNELS)  # over a page pool
DECODE_KEY_BLOCK = 128

# (path or "auto", key block of the blocked path)
_FORCED: contextvars.ContextVar = contextvars.ContextVar("decode_attention_path",
                                                         default=("auto", DECODE_KEY_BLOCK))
_USED: dict = {}
_RECORDER: contextvars.ContextVar = contextvars.ContextVar("decode_attention_recorder", default=None)


@contextlib.contextmanager
def decode_attention_path(path: str = "auto", block: int = DECODE_KEY_BLOCK):
    """Within it, decode steps traced use `path` (``auto`` picks per backend)
    and the blocked path reads keys in blocks of `block`."""
    if path not in ("auto", *PATHS, *PAGED_PATHS):
        raise ValueError(f"decode attention path {path!r} is not one of auto, "
                         f"{', '.join(PATHS + PAGED_PATHS)}")
    if block < 1:
        raise ValueError(f"decode attention key block must be >= 1, got {block}")
    token = _FORCED.set((path, int(block)))
    try:
        yield
    finally:
        _FORCED.reset(token)


def forced_path() -> tuple:
    """The (path, block) forced here: part of a decode's jit cache key."""
    return _FORCED.get()


@contextlib.contextmanager
def recording(record: dict):
    """Within it, the paths traced are also recorded into `record`."""
    token = _RECORDER.set(record)
    try:
        yield
    finally:
        _RECORDER.reset(token)


def _record(path: str, desc: str) -> None:
    _USED[(path, desc)] = True
    record = _RECORDER.get()
    if record is not None:
        record[(path, desc)] = True


def paths_used(record: Optional[dict] = None) -> dict:
    """`{path: [shape descriptions]}` of the decode attentions traced so far
    (in `record`, else in this process)."""
    out: dict = {}
    for (path, desc) in (_USED if record is None else record):
        out.setdefault(path, []).append(desc)
    return {k: sorted(v) for k, v in out.items()}


def decode_attention(q: Array, ck: Array, cv: Array, positions: Array, dtype) -> Array:
    """`[B, K, G, Dh]` attention output of one query per row (see the module doc)."""
    forced, block = _FORCED.get()
    path = forced if forced in DENSE_PATHS else _auto_path(q, ck, dtype)
    if path == "pallas" and _pallas_split(ck.shape[2]) is None:
        path = "blocked"  # a cache length the kernel's blocks cannot tile
    b, kh, g, dh = q.shape
    _record(path, f"B{b} K{kh} G{g} S{ck.shape[2]} Dh{dh} {jnp.dtype(ck.dtype).name}")
    if path == "pallas":
        return _pallas(q, ck, cv, positions, dtype, interpret=jax.default_backend() != "gpu")
    if path == "blocked":
        return _blocked(q, ck, cv, positions, dtype, block)
    mask = jnp.arange(ck.shape[2])[None, :] <= positions[:, None]
    return full_decode_attention(q, ck.astype(dtype), cv.astype(dtype), mask, dh, dtype)


def gather_pages(pool: Array, pages: Array) -> Array:
    """Each row's pages as a dense cache: `[K, P, ps, Dh]` through `[B, M]` ->
    `[B, K, M * ps, Dh]` (an XLA gather)."""
    kh, _, ps, dh = pool.shape
    b, m = pages.shape
    rows = jnp.take(pool, pages, axis=1, mode="clip")  # [K, B, M, ps, Dh]
    return jnp.transpose(rows, (1, 0, 2, 3, 4)).reshape(b, kh, m * ps, dh)


def paged_decode_attention(q: Array, pool_k: Array, pool_v: Array, pages: Array, positions: Array,
                           dtype) -> Array:
    """`[B, K, G, Dh]` attention of one query per row over its pages: q
    `[B, K, G, Dh]`, pools `[K, P, ps, Dh]`, page tables `[B, M]`, the
    query's own position `[B]` (row b reads its keys `0..pos[b]`)."""
    forced, _ = _FORCED.get()
    if forced in PAGED_KERNELS:
        path = forced
    elif forced == "auto":
        path = _auto_paged_path(tuple(q.shape), tuple(pool_k.shape), tuple(pages.shape),
                                jnp.dtype(pool_k.dtype).name, jnp.dtype(dtype).name)
    else:
        path = "gather"  # a forced dense path runs over the gathered pages
    b, kh, g, dh = q.shape
    _record(path, f"B{b} K{kh} G{g} P{pool_k.shape[1]} ps{pool_k.shape[2]} M{pages.shape[1]} Dh{dh} "
                  f"{jnp.dtype(pool_k.dtype).name}")
    if path == "gather":
        ck, cv = gather_pages(pool_k, pages), gather_pages(pool_v, pages)
        return decode_attention(q, ck, cv, positions, dtype)
    return _paged_kernel(path, q, pool_k, pool_v, pages, positions, dtype,
                         interpret=jax.default_backend() != path[len("paged_"):])


def _paged_kernel(path, q, pool_k, pool_v, pages, positions, dtype, *, interpret: bool):
    """One of jax's paged-attention kernels (which take unscaled queries
    `[B, H, Dh]` in the pool's dtype and each row's key count)."""
    b, kh, g, dh = q.shape
    m, ps = pages.shape[1], pool_k.shape[2]
    lengths = jnp.clip(positions + 1, 1, m * ps).astype(jnp.int32)
    qs = (q * jnp.asarray(dh ** -0.5, q.dtype)).reshape(b, kh * g, dh).astype(pool_k.dtype)
    pages = pages.astype(jnp.int32)
    if path == "paged_gpu":
        from jax.experimental.pallas.ops.gpu import paged_attention as gpu_kernel

        splits = next(s for s in (16, 8, 4, 2, 1) if m % s == 0)
        block = next(c for c in (8, 4, 2, 1) if (m // splits) % c == 0)
        out = gpu_kernel.paged_attention(qs, pool_k, pool_v, pages, lengths, k_splits=splits,
                                         pages_per_compute_block=block, interpret=interpret)
    else:
        from jax.experimental.pallas.ops.tpu.paged_attention import paged_attention as tpu_kernel

        block = next(c for c in (8, 4, 2, 1) if m % c == 0)
        run = functools.partial(tpu_kernel, qs, pool_k, pool_v, lengths, pages,
                                pages_per_compute_block=block)
        if interpret:
            from jax.experimental.pallas import tpu as pltpu

            with pltpu.force_tpu_interpret_mode():
                out = run()
        else:
            out = run()
    return out.reshape(b, kh, g, dh).astype(dtype)


def _auto_paged_path(q_shape, pool_shape, pages_shape, pool_dtype: str, dtype: str) -> str:
    """``gather`` on CPU (a measured choice: the dense pass XLA:CPU runs
    fastest), on a mesh of several devices, and wherever jax's kernel for
    this backend does not compile (a WARNING with the error); else that kernel."""
    backend = jax.default_backend()
    if backend not in ("gpu", "tpu"):
        return "gather"
    ctx = current_context()
    if ctx is not None and ctx[0].size > 1:
        return "gather"  # a pallas_call is not split by the SPMD partitioner
    return _paged_kernel_probe(backend, q_shape, pool_shape, pages_shape, pool_dtype, dtype)


@functools.lru_cache(maxsize=64)
def _paged_kernel_probe(backend, q_shape, pool_shape, pages_shape, pool_dtype: str, dtype: str) -> str:
    """The backend's paged kernel if it compiles for these shapes (once per shape)."""
    path = f"paged_{backend}"
    try:
        q = jax.ShapeDtypeStruct(q_shape, jnp.dtype(dtype))
        pool = jax.ShapeDtypeStruct(pool_shape, jnp.dtype(pool_dtype))
        pages = jax.ShapeDtypeStruct(pages_shape, jnp.int32)
        pos = jax.ShapeDtypeStruct(q_shape[:1], jnp.int32)
        fn = functools.partial(_paged_kernel, path, dtype=jnp.dtype(dtype), interpret=False)
        jax.jit(fn).lower(q, pool, pool, pages, pos).compile()
        return path
    except Exception as e:  # noqa: BLE001 - any failure means: use the XLA gather
        log.warning("%s paged attention unavailable for q %s pool %s pages %s %s (%s: %s); "
                    "using the XLA gather", path, q_shape, pool_shape, pages_shape, pool_dtype,
                    type(e).__name__, str(e)[:300])
        return "gather"


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


def planned_path(q_shape, dtype, cache_shape=None, pool_shape=None, pages_shape=None,
                 cache_dtype=None) -> str:
    """The path a decode step of these shapes will take here (what an engine
    logs when it starts): a dense cache `cache_shape`, or a page pool
    `pool_shape` read through tables `pages_shape` (then ``gather`` names the
    dense path run over the gathered pages)."""
    forced, _ = _FORCED.get()
    cache_dtype = jnp.dtype(cache_dtype or dtype)
    q = jax.ShapeDtypeStruct(tuple(q_shape), jnp.dtype(dtype))
    if pool_shape is not None:
        if forced in PAGED_KERNELS:
            return forced
        if forced == "auto":
            paged = _auto_paged_path(tuple(q_shape), tuple(pool_shape), tuple(pages_shape),
                                     cache_dtype.name, jnp.dtype(dtype).name)
            if paged != "gather":
                return paged
        b, m = pages_shape
        cache_shape = (b, pool_shape[0], m * pool_shape[2], pool_shape[3])
        prefix = "gather+"
    else:
        prefix = ""
    ck = jax.ShapeDtypeStruct(tuple(cache_shape), cache_dtype)
    path = forced if forced in DENSE_PATHS else _auto_path(q, ck, dtype)
    if path == "pallas" and _pallas_split(cache_shape[2]) is None:
        path = "blocked"
    return prefix + path


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
