"""Decode attention over a page pool, every path (jax's GPU and TPU kernels in
Pallas' interpreter on CPU) against a float64 softmax, and the path each
engine took recorded per engine."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rstar_jax.models import decode_attention as da

K, G, DH, PS, P, M = 2, 3, 16, 8, 12, 4
# Rows of 1 key, a full page, a page boundary + 1, and 4 pages; rows 2 and 3
# share their first two pages (a node's candidates).
LENGTHS = [1, PS, PS + 1, 4 * PS]
TABLES = [[5, 0, 0, 0], [7, 0, 0, 0], [2, 9, 0, 0], [2, 9, 4, 11]]


def inputs(dtype=jnp.float32):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((len(LENGTHS), K, G, DH)).astype(np.float32)
    pk = rng.standard_normal((K, P, PS, DH)).astype(np.float32)
    pv = rng.standard_normal((K, P, PS, DH)).astype(np.float32)
    return (jnp.asarray(q, dtype), jnp.asarray(pk, dtype), jnp.asarray(pv, dtype),
            jnp.asarray(TABLES, jnp.int32), jnp.asarray(LENGTHS, jnp.int32) - 1)


def reference(q, pk, pv, tables, positions):
    """float64 softmax over each row's keys `0..pos` read through its pages."""
    q, pk, pv = (np.asarray(x, np.float64) for x in (q, pk, pv))
    out = np.zeros(q.shape)
    for b, (row, pos) in enumerate(zip(np.asarray(tables), np.asarray(positions))):
        keys = np.concatenate([pk[:, p] for p in row], axis=1)[:, : pos + 1]  # [K, L, Dh]
        vals = np.concatenate([pv[:, p] for p in row], axis=1)[:, : pos + 1]
        scores = np.einsum("kgh,klh->kgl", q[b], keys) / np.sqrt(DH)
        w = np.exp(scores - scores.max(-1, keepdims=True))
        out[b] = np.einsum("kgl,klh->kgh", w / w.sum(-1, keepdims=True), vals)
    return out


def run(path, dtype=jnp.float32):
    q, pk, pv, tables, positions = inputs(dtype)
    fn = jax.jit(lambda *a: da.paged_decode_attention(*a, jnp.float32))
    with da.decode_attention_path(path):
        out = fn(q, pk, pv, tables, positions)
    return np.asarray(out, np.float64), reference(q, pk, pv, tables, positions)


@pytest.mark.parametrize("path", ["auto", "paged_gpu"])
def test_gather_and_gpu_kernel_match_a_float64_softmax(path):
    got, want = run(path)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    traced = da.paths_used()["gather" if path == "auto" else path]
    assert any(f"P{P} ps{PS} M{M}" in desc for desc in traced)


def test_tpu_kernel_matches_a_float64_softmax():
    """The TPU kernel under `force_tpu_interpret_mode`. Its interpreter rounds
    like the chip's matrix unit (bfloat16 products: a row of one key returns
    its value rounded to bfloat16), so the tolerance is bfloat16's."""
    got, want = run("paged_tpu")
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-2)
    one = inputs()
    v0 = np.asarray(one[2])[:, TABLES[0][0], 0]  # the single key's value, [K, Dh]
    np.testing.assert_allclose(got[0], np.broadcast_to(v0[:, None], (K, G, DH)), atol=2 ** -8)


def test_kernel_choice_per_backend_falls_back_with_a_warning(monkeypatch, caplog):
    assert da._auto_paged_path((4, K, G, DH), (K, P, PS, DH), (4, M), "float32", "float32") == "gather"
    da._paged_kernel_probe.cache_clear()
    monkeypatch.setattr(da.jax, "default_backend", lambda: "gpu")
    try:
        with caplog.at_level("WARNING"):  # the Triton kernel cannot compile on a CPU host
            assert da._auto_paged_path((4, K, G, DH), (K, P, PS, DH), (4, M), "bfloat16",
                                       "bfloat16") == "gather"
        assert any("paged_gpu paged attention unavailable" in r.getMessage() for r in caplog.records)
    finally:
        da._paged_kernel_probe.cache_clear()


def test_each_engine_records_its_own_path_and_a_forced_path_retraces(policy, tokenizer):
    from inference.inference_helpers import tiny_cfg
    from inference.test_engine import SMALL, prompt_with_tokens

    from rstar_jax.inference import Engine

    dense = Engine(policy, tokenizer, tiny_cfg(*SMALL, "engine.kv_layout=dense").engine)
    paged = Engine(policy, tokenizer, tiny_cfg(*SMALL, "engine.kv_layout=paged",
                                               "engine.page_size=8").engine)
    assert dense.core.planned_attention() == "full" and paged.core.planned_attention() == "gather+full"
    prompt = prompt_with_tokens(tokenizer, 9)
    want = paged.generate([prompt], max_new_tokens=4, temperature=0.0)[0][0]
    dense.generate([prompt], max_new_tokens=4, temperature=0.0)
    assert set(dense.attention_paths()) == {"full"}
    assert set(paged.attention_paths()) == {"gather", "full"}
    with da.decode_attention_path("paged_gpu"):  # same shapes, another path: a new trace
        got = paged.generate([prompt], max_new_tokens=4, temperature=0.0)[0][0]
    assert "paged_gpu" in paged.attention_paths() and "paged_gpu" not in dense.attention_paths()
    assert got.token_ids == want.token_ids
