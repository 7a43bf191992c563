"""The paged KV layout: the dense engine's tokens bit for bit, clones that copy
no full page, a prefix cache of shared pages, and a full pool that waits."""

import numpy as np
import pytest
from inference.inference_helpers import tiny_arch, tiny_cfg
from inference.test_engine import SMALL, prompt_with_tokens

from rstar_jax.inference import Engine, GenerationRequest, SamplingParams
from rstar_jax.inference.paged import PagePool
from rstar_jax.inference.prefix_cache import PagePrefixCache

PAGED = ("engine.kv_layout=paged", "engine.page_size=8")
# Contexts of 0, 7, 8, 9, 15, 16, 17 and 29 tokens: empty, one short of a
# page, a full page, a page boundary + 1, and several pages.
LENGTHS = [1, 8, 9, 10, 16, 17, 18, 30]


def engine_with(policy, tokenizer, *overrides):
    return Engine(policy, tokenizer, tiny_cfg(*SMALL, "engine.prefill_chunk=8",
                                              "engine.prefill_tokens=16", *overrides).engine)


@pytest.fixture(scope="module")
def dense(policy, tokenizer):
    return engine_with(policy, tokenizer, "engine.kv_layout=dense", "engine.prefix_cache=false")


@pytest.fixture(scope="module")
def paged(policy, tokenizer):
    return engine_with(policy, tokenizer, *PAGED, "engine.prefix_cache=false")


def outputs(results):
    return [[(c.token_ids, c.logprob, c.stop_reason) for c in cands] for cands in results]


def test_greedy_and_seeded_sampling_are_bit_identical_to_dense(dense, paged, tokenizer):
    prompts = [prompt_with_tokens(tokenizer, n, i) for i, n in enumerate(LENGTHS)]
    for kw in (dict(n=1, max_new_tokens=12, temperature=0.0),
               dict(n=3, max_new_tokens=9, temperature=1.0, top_p=0.9, seed=7)):
        want = outputs(dense.generate(prompts, **kw))
        got = outputs(paged.generate(prompts, **kw))
        assert got == want  # tokens and float32 log-probs alike
    assert paged.core.pool.used == 0  # every page came back


def test_clones_share_full_pages_and_copy_only_the_partial_one(paged, dense, tokenizer):
    page = paged.core.page_bytes
    for ctx, partial in ((16, 0), (20, 1)):  # 2 full pages; 2 full + 4 tokens
        req = GenerationRequest(prompt_with_tokens(tokenizer, ctx + 1, 3),
                                SamplingParams(n=4, max_new_tokens=6, temperature=1.0, seed=2))
        paged.core.copied_bytes = dense.core.copied_bytes = 0
        got = paged.generate([req])[0]
        assert paged.core.copied_bytes == 3 * partial * page  # 3 clones of the lead slot
        assert [c.token_ids for c in got] == [c.token_ids for c in dense.generate([req])[0]]
        assert dense.core.copied_bytes >= 3 * 2 * page  # the dense layout copies whole rows


def test_later_waves_and_a_full_pool_wait_and_give_the_same_tokens(policy, tokenizer, dense):
    """Six candidates through 4 slots (later waves from pinned pages), and a
    pool so small that only one candidate at a time fits: new work waits,
    nothing is cut short, and the tokens are those of the dense engine."""
    prompts = [prompt_with_tokens(tokenizer, n, i) for i, n in enumerate((21, 12))]
    reqs = [GenerationRequest(p, SamplingParams(n=6, max_new_tokens=9, temperature=1.0, seed=5 + i))
            for i, p in enumerate(prompts)]
    want = outputs(dense.generate(reqs))
    # A 21-token prompt's candidate needs ceil((20 + 9) / 8) = 4 pages.
    for pages in (0, 6):
        tight = engine_with(policy, tokenizer, *PAGED, f"engine.num_pages={pages}")
        assert outputs(tight.generate(reqs)) == want
        assert tight.core.pool.used == len(tight.prefix_cache)  # only the cache holds pages
        tight.prefix_cache.clear()
        assert tight.core.pool.used == 0 and not tight.core.pool.refs.any()
    with pytest.raises(ValueError, match="engine.num_pages"):
        engine_with(policy, tokenizer, *PAGED, "engine.num_pages=3").generate(reqs)


def test_prefix_cache_pages_are_shared_and_exact(policy, tokenizer, dense):
    parent = prompt_with_tokens(tokenizer, 26, 1)
    child = parent + " step by step total cost"
    warm = engine_with(policy, tokenizer, *PAGED)
    kw = dict(n=2, max_new_tokens=8, temperature=0.0)
    warm.generate([parent], **kw)
    assert len(warm.prefix_cache) == 4  # 25 context tokens: 3 full pages and a partial one
    calls = []
    real = warm.core.prefill_rows
    warm.core.prefill_rows = lambda rows, **k: calls.append(rows) or real(rows, **k)
    again = warm.generate([parent], **kw)[0]  # the whole context from shared pages
    assert not calls and warm.prefix_cache.hits == 1 and warm.prefix_cache.reused_tokens == 25
    got = warm.generate([child], **kw)[0]
    assert min(start for call in calls for _, _, start in call) >= 24
    for prompt, out in ((parent, again), (child, got)):
        ref = dense.generate([prompt], **kw)[0]
        assert [c.token_ids for c in out] == [c.token_ids for c in ref]


def test_page_prefix_cache_lookup_partial_pages_and_eviction():
    pool = PagePool(16)
    cache = PagePrefixCache(pool, page_size=4, max_pages=3)
    pages = pool.alloc(3)
    cache.insert(list(range(10)), pages)  # pages: [0..3], [4..7], partial [8, 9]
    assert list(pool.refs[pages]) == [2, 2, 2]
    assert cache.lookup(list(range(12))) == (pages[:2], (pages[2], 2), 10)
    assert cache.lookup([0, 1, 2, 3, 4, 5, 9, 9]) == (pages[:1], (pages[1], 2), 6)
    assert cache.lookup([0, 1, 2, 3]) == (pages[:1], None, 4)
    assert cache.lookup([1, 2]) is None
    pool.release(pages)  # the slot that wrote them is done: the cache keeps them
    other = pool.alloc(2)
    cache.insert([7, 7, 7, 7, 8, 8], other)  # 5 nodes > max_pages: the oldest leaves go
    assert len(cache) == 3
    assert cache.lookup(list(range(10)))[2] == 4  # the partial leaf, then page 2, were evicted
    assert pool.refs[pages[0]] == 1 and not pool.refs[pages[1:]].any()
    cache.clear()
    pool.release(other)
    assert pool.used == 0


def test_page_size_must_divide_every_cache_length(policy, tokenizer):
    with pytest.raises(ValueError, match="must divide every prefill bucket"):
        engine_with(policy, tokenizer, "engine.kv_layout=paged", "engine.page_size=16")


def test_explicit_insert_and_decode_match_dense(dense, paged, tokenizer):
    ids = tokenizer.encode(prompt_with_tokens(tokenizer, 13, 4))
    params = SamplingParams(max_new_tokens=8, temperature=0.0)
    rows = []
    for eng in (dense, paged):
        eng.insert(eng.prefill(ids), 2, params)
        eng.core.ensure_cache_length(len(ids) + 8)
        out = np.stack([eng.decode()[2] for _ in range(2)])
        eng.free(2)
        rows.append(out)
    np.testing.assert_array_equal(rows[0], rows[1])
    assert paged.core.pool.used == 0


def test_prefill_rows_riding_decode_calls_give_the_same_tokens(policy, tokenizer):
    """More candidates than slots and prompts of several chunks: with
    `engine.mixed_prefill` the chunks prefilled while slots decode run
    inside decode calls (also with jax's GPU paged kernel as the decode
    attention, interpreted here). Tokens are the dense engine's; log-probs
    too up to float32 rounding (a mixed call's matmuls have more rows, and
    XLA:CPU rounds per shape); without the switch, bit for bit."""
    from rstar_jax.models import decode_attention as da

    # The first request's candidates decode long while the others come and go.
    shapes = [(5, 40), (30, 8), (23, 12), (12, 10), (17, 14), (9, 9)]  # (prompt tokens, max new)
    reqs = [GenerationRequest(prompt_with_tokens(tokenizer, n, i),
                              SamplingParams(n=2, max_new_tokens=m, temperature=1.0, seed=3 + i))
            for i, (n, m) in enumerate(shapes)]
    # A fresh dense engine: one whose cache an earlier call left longer
    # decodes over more (masked) keys, which XLA:CPU rounds differently.
    fresh = engine_with(policy, tokenizer, "engine.kv_layout=dense", "engine.prefix_cache=false")
    want = outputs(fresh.generate(reqs))
    apart = engine_with(policy, tokenizer, *PAGED, "engine.prefix_cache=false")
    assert outputs(apart.generate(reqs)) == want
    assert apart.core.mixed_calls == 0  # off by default
    mixed = engine_with(policy, tokenizer, *PAGED, "engine.prefix_cache=false", "engine.mixed_prefill=true")
    for path in ("auto", "paged_gpu"):
        calls = mixed.core.mixed_calls
        with da.decode_attention_path(path):
            got = outputs(mixed.generate(reqs))
        assert mixed.core.mixed_calls - calls >= 3  # the 23-token prompt's 3 chunks at least
        assert [[c[0] for c in r] for r in got] == [[c[0] for c in r] for r in want]
        assert [[c[2] for c in r] for r in got] == [[c[2] for c in r] for r in want]
        np.testing.assert_allclose([c[1] for r in got for c in r], [c[1] for r in want for c in r],
                                   rtol=1e-6)
        assert mixed.core.pool.used == 0
    assert "paged_gpu" in mixed.attention_paths()


def test_riding_prefill_on_eight_devices_matches_one_device(tokenizer):
    """The mixed call on a mesh (pool over kv heads, the flat token batch of
    one row): the same tokens as on one device."""
    import jax
    from flax import nnx
    from jax.sharding import AxisType

    from rstar_jax.models import Policy

    assert jax.device_count() == 8
    cfg = tiny_cfg(*SMALL, "engine.prefill_chunk=8", "engine.prefill_tokens=16", *PAGED,
                   "engine.mixed_prefill=true", "engine.prefix_cache=false")
    policy = Policy(tiny_arch(cfg), rngs=nnx.Rngs(0))
    shapes = [(5, 30), (21, 6), (17, 8), (12, 5)]  # (prompt tokens, max new)
    reqs = [GenerationRequest(prompt_with_tokens(tokenizer, n, i),
                              SamplingParams(n=2, max_new_tokens=m, temperature=0.0))
            for i, (n, m) in enumerate(shapes)]
    single = Engine(policy, tokenizer, cfg.engine)
    want = single.generate(reqs)
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
    sharded = Engine(policy, tokenizer, cfg.engine, mesh=mesh, rules=cfg.mesh.inference_rules)
    got = sharded.generate(reqs)
    assert single.core.mixed_calls >= 2 and sharded.core.mixed_calls == single.core.mixed_calls
    assert [[c.token_ids for c in r] for r in got] == [[c.token_ids for c in r] for r in want]
