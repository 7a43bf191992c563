"""Decode attention per backend (issue 17): every path (whole cache, blocks up
to the largest live position, the Pallas GPU kernel run in its interpreter)
gives the attention of each row over exactly its keys `0..pos`, whatever
stale values lie past it, and the engine's greedy tokens do not change."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from inference.inference_helpers import tiny_cfg
from inference.test_engine import SMALL, prompt_with_tokens, teacher_forced

from rstar_jax.inference import Engine
from rstar_jax.models import decode_attention as da

B, K, G, S, DH = 7, 2, 3, 64, 16
POSITIONS = [0, 15, 16, 17, 40, 62, 63]  # block edges of 16, first and last key


def reference(q, ck, cv, positions):
    """float64 softmax over each row's keys `0..pos` only (sliced, not masked)."""
    out = np.zeros(q.shape)
    for b, p in enumerate(positions):
        k, v = ck[b, :, : p + 1].astype(np.float64), cv[b, :, : p + 1].astype(np.float64)
        s = np.einsum("kgh,ksh->kgs", q[b].astype(np.float64), k) / np.sqrt(DH)
        w = np.exp(s - s.max(-1, keepdims=True))
        out[b] = np.einsum("kgs,ksh->kgh", w / w.sum(-1, keepdims=True), v)
    return out


def caches(rng, stale_scale):
    """Random caches whose entries past each row's position are `stale_scale`-sized garbage."""
    ck, cv = rng.standard_normal((2, B, K, S, DH)).astype(np.float32)
    for b, p in enumerate(POSITIONS):
        ck[b, :, p + 1:] = stale_scale * rng.standard_normal(ck[b, :, p + 1:].shape)
        cv[b, :, p + 1:] = stale_scale * rng.standard_normal(cv[b, :, p + 1:].shape)
    return ck, cv


@pytest.mark.parametrize("path", da.PATHS)
def test_each_path_attends_over_exactly_the_keys_up_to_each_rows_position(path):
    rng = np.random.RandomState(0)
    q = rng.standard_normal((B, K, G, DH)).astype(np.float32)
    ck, cv = caches(rng, 100.0)
    fn = jax.jit(lambda q, ck, cv, p: da.decode_attention(q, ck, cv, p, jnp.float32))
    with da.decode_attention_path(path, block=16):
        got = np.asarray(fn(q, ck, cv, jnp.asarray(POSITIONS, jnp.int32)))
        ck2, cv2 = caches(np.random.RandomState(1), 1000.0)  # other stale values, same live keys
        live = np.arange(S)[None, None, :, None] <= np.asarray(POSITIONS)[:, None, None, None]
        again = np.asarray(fn(q, np.where(live, ck, ck2), np.where(live, cv, cv2),
                              jnp.asarray(POSITIONS, jnp.int32)))
    np.testing.assert_allclose(got, reference(q, ck, cv, POSITIONS), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(again, got, rtol=1e-6, atol=1e-6)
    assert any(desc.startswith(f"B{B} K{K} G{G} S{S}") for desc in da.paths_used()[path])


def test_blocked_path_reads_only_blocks_up_to_the_largest_position():
    """Past the largest position of the call nothing is read: NaNs there
    (which any read would spread into the result) leave it finite and equal."""
    rng = np.random.RandomState(2)
    q = rng.standard_normal((B, K, G, DH)).astype(np.float32)
    ck, cv = caches(rng, 1.0)
    pos = np.asarray([3, 9, 17, 20, 25, 30, 31], np.int32)  # largest 31: blocks 0 and 1 of 16
    ck[:, :, 32:], cv[:, :, 32:] = np.nan, np.nan
    with da.decode_attention_path("blocked", block=16):
        got = np.asarray(jax.jit(lambda *a: da.decode_attention(*a, jnp.float32))(q, ck, cv, jnp.asarray(pos)))
    np.testing.assert_allclose(got, reference(q, ck, cv, pos), rtol=1e-5, atol=1e-5)


def test_unknown_path_is_refused():
    with pytest.raises(ValueError, match="not one of"):
        with da.decode_attention_path("flash"):
            pass


def test_cpu_picks_the_whole_cache_path():
    q = jnp.zeros((2, K, G, DH))
    assert da._auto_path(q, jnp.zeros((2, K, S, DH)), jnp.float32) == "full"


ENGINE_CFG = (*SMALL, "engine.prefix_cache=false")


@pytest.fixture(scope="module")
def whole_cache_run(policy, tokenizer):
    """8 prompts of 1-30 tokens through 4 slots, greedy, on CPU's whole-cache path."""
    prompts = [prompt_with_tokens(tokenizer, n, i) for i, n in enumerate([3, 8, 9, 16, 17, 30, 1, 12])]
    with da.decode_attention_path("full"):
        engine = Engine(policy, tokenizer, tiny_cfg(*ENGINE_CFG).engine)
        return prompts, engine.generate(prompts, n=1, max_new_tokens=21, temperature=0.0)


@pytest.mark.parametrize("path", ["blocked", "pallas"])
def test_engine_greedy_tokens_are_those_of_the_whole_cache_path(policy, tokenizer, whole_cache_run, path):
    """8 prompts of 1-30 tokens through 4 slots (every slot reused, stale keys
    past each position), decoding across key blocks of 16 and cache lengths
    8-64: the same tokens and log-probs as the whole-cache path, and the
    teacher-forced argmax. The pallas path falls back to blocks at S = 8."""
    prompts, full = whole_cache_run
    cfg = tiny_cfg(*ENGINE_CFG).engine
    before = {k: set(v) for k, v in da.paths_used().items()}
    with da.decode_attention_path(path, block=16):
        engine = Engine(policy, tokenizer, cfg)
        got = engine.generate(prompts, n=1, max_new_tokens=21, temperature=0.0)
    traced = set(da.paths_used().get(path, ())) - before.get(path, set())
    assert traced, f"the engine never traced the {path} path"
    for prompt, (ref,), (c,) in zip(prompts, full, got):
        assert c.token_ids == ref.token_ids and c.stop_reason == ref.stop_reason
        np.testing.assert_allclose(c.logprob, ref.logprob, rtol=1e-5, atol=1e-4)
        argmax, _ = teacher_forced(policy, tokenizer.encode(prompt), c.token_ids)
        np.testing.assert_array_equal(np.asarray(c.token_ids), argmax)
    assert max(len(ids) for ids in (tokenizer.encode(p) for p in prompts)) + 21 > 32  # crossed into S 64


def test_gpu_choice_falls_back_to_blocks_where_the_kernel_cannot_run(monkeypatch):
    """On a GPU backend: the kernel for bf16/f16 caches whose length it tiles
    when its probe compile succeeds; blocks for float32, untileable lengths,
    a failed probe, or a mesh of several devices."""
    monkeypatch.setattr(da.jax, "default_backend", lambda: "gpu")
    probe = {"ok": True}
    monkeypatch.setattr(da, "_pallas_compiles", lambda *a: probe["ok"])
    q16, c16 = jnp.zeros((2, K, G, DH), jnp.bfloat16), jnp.zeros((2, K, 256, DH), jnp.bfloat16)
    assert da._auto_path(q16, c16, jnp.bfloat16) == "pallas"
    assert da._auto_path(q16.astype(jnp.float32), c16.astype(jnp.float32), jnp.float32) == "blocked"
    assert da._auto_path(q16, jnp.zeros((2, K, 40, DH), jnp.bfloat16), jnp.bfloat16) == "blocked"
    probe["ok"] = False
    assert da._auto_path(q16, c16, jnp.bfloat16) == "blocked"
    probe["ok"] = True
    from types import SimpleNamespace
    monkeypatch.setattr(da, "current_context", lambda: (SimpleNamespace(size=4), {}))
    assert da._auto_path(q16, c16, jnp.bfloat16) == "blocked"


def test_kernel_probe_inside_a_trace_reports_failure_instead_of_raising():
    """Off GPU the Triton kernel cannot compile: the probe (run while the
    decode step is being traced) says so and the caller falls back."""
    assert jax.default_backend() == "cpu"
    seen = []

    def traced(x):
        seen.append(da._pallas_compiles((2, K, G, DH), (2, K, 64, DH), "bfloat16"))
        return x + 1

    jax.jit(traced)(jnp.zeros(3))
    assert seen == [False]


def test_pallas_tiling_uses_power_of_two_splits_of_at_least_16_keys():
    assert da._pallas_split(256) == (16, 16)
    assert da._pallas_split(384) == (12, 32)
    assert da._pallas_split(4096) == (16, 128)
    assert da._pallas_split(8) is None and da._pallas_split(40) is None
