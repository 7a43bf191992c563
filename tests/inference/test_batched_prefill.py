"""Batched prefill into decode slots: the same tokens as one prompt at a time,
exact clones and prefix reuse, and no compile after warmup in a whole search."""

import dataclasses

import numpy as np
import pytest
from flax import nnx
from inference.inference_helpers import tiny_cfg
from inference.test_engine import SMALL, prompt_with_tokens, teacher_forced

from rstar_jax.inference import Engine, GenerationRequest, SamplingParams
from rstar_jax.models import ArchConfig, Policy
from testutil import count_compiles

# Chunks of at most 8 tokens, at most 16 tokens (2 rows of 8) per call: every
# prompt over 8 context tokens spans calls, and calls mix rows of different
# prompts and chunk positions.
BATCHED = (*SMALL, "engine.prefill_chunk=8", "engine.prefill_tokens=16")
# One prompt per call, never chunked (context <= 32 tokens).
SINGLE = (*SMALL, "engine.num_slots=1", "engine.prefill_chunk=32", "engine.prefill_tokens=32")
LENGTHS = [3, 8, 9, 16, 17, 30, 1, 12, 25, 5]


def recording(engine):
    """Records every batched prefill call's rows as (slot, n tokens, start)."""
    calls = []
    real = engine.core.prefill_rows

    def spy(rows, **kw):
        calls.append([(slot, len(ids), start) for slot, ids, start in rows])
        return real(rows, **kw)

    engine.core.prefill_rows = spy
    return calls


def engine_with(policy, tokenizer, *overrides):
    return Engine(policy, tokenizer, tiny_cfg(*overrides).engine)


def test_batched_chunked_prefill_gives_the_tokens_of_one_prompt_prefill(policy, tokenizer):
    prompts = [prompt_with_tokens(tokenizer, n, i) for i, n in enumerate(LENGTHS)]
    batched = engine_with(policy, tokenizer, *BATCHED, "engine.prefix_cache=false")
    calls = recording(batched)
    got = batched.generate(prompts, n=1, max_new_tokens=11, temperature=0.0)
    single = engine_with(policy, tokenizer, *SINGLE, "engine.prefix_cache=false")
    single_calls = recording(single)
    for prompt, (c,) in zip(prompts, got):
        (ref,) = single.generate([prompt], n=1, max_new_tokens=11, temperature=0.0)[0]
        assert c.token_ids == ref.token_ids and c.stop_reason == ref.stop_reason
        np.testing.assert_allclose(c.logprob, ref.logprob, rtol=1e-5, atol=1e-5)
        argmax, _ = teacher_forced(policy, tokenizer.encode(prompt), c.token_ids)
        np.testing.assert_array_equal(np.asarray(c.token_ids), argmax)
    # The batched engine really mixed prompts, chunk positions and reused slots.
    rows = [r for call in calls for r in call]
    assert max(len(call) for call in calls) == 2
    assert any(start > 0 for _, _, start in rows)  # later chunks of long prompts
    assert {start for _, _, start in rows} >= {0, 8, 16, 24}
    assert len(rows) > len({slot for slot, _, _ in rows})  # 10 prompts through 4 slots
    assert all(len(call) == 1 and call[0][2] == 0 for call in single_calls)
    assert sorted(batched.free_slots) == [0, 1, 2, 3] and not batched.slot_jobs


def test_clones_and_later_waves_sample_exactly_like_one_wave(policy, tokenizer):
    """n=6 sampled candidates: through 4 slots (a lead slot, copies, and a saved
    KV for the second wave) they equal those of 8 slots (one wave)."""
    req = GenerationRequest(prompt_with_tokens(tokenizer, 21, 2),
                            SamplingParams(n=6, max_new_tokens=9, temperature=1.0, seed=5))
    four = engine_with(policy, tokenizer, *BATCHED, "engine.prefix_cache=false")
    calls = recording(four)
    waves = four.generate([req])[0]
    eight = engine_with(policy, tokenizer, *BATCHED, "engine.num_slots=8", "engine.prefix_cache=false")
    one_wave = eight.generate([req])[0]
    assert [c.token_ids for c in waves] == [c.token_ids for c in one_wave]
    assert len({c.token_ids for c in waves}) > 1  # the candidates draw different streams
    assert sum(len(call) for call in calls) == 3  # 20 context tokens once: chunks of 8, 8, 4


def test_prefix_cache_full_and_partial_hits_are_exact(policy, tokenizer):
    parent = prompt_with_tokens(tokenizer, 26, 1)
    child = parent + " step by step total cost"
    cold = engine_with(policy, tokenizer, *BATCHED, "engine.prefix_cache=false")
    warm = engine_with(policy, tokenizer, *BATCHED)
    calls = recording(warm)
    kw = dict(n=2, max_new_tokens=8, temperature=0.0)
    warm.generate([parent], **kw)
    first = len(calls)
    again = warm.generate([parent], **kw)[0]  # whole context from the cache: no prefill
    assert len(calls) == first and warm.prefix_cache.hits == 1
    got = warm.generate([child], **kw)[0]
    assert warm.prefix_cache.hits == 2
    assert min(start for call in calls[first:] for _, _, start in call) >= 16  # reused rows
    for prompt, out in ((parent, again), (child, got)):
        ref = cold.generate([prompt], **kw)[0]
        assert [c.token_ids for c in out] == [c.token_ids for c in ref]


@pytest.mark.parametrize("layout", [(), ("engine.kv_layout=paged", "engine.page_size=16",
                                           "engine.mixed_prefill=true")], ids=["dense", "paged-mixed"])
def test_whole_search_compiles_nothing_after_warmup(layout):
    from search.search_helpers import add_problems, make_cfg

    from rstar_jax.data.prompts import STEP_STOPS
    from rstar_jax.search.driver import MCTSDriver
    from rstar_jax.testing import mock

    tok = mock.tiny_step_tokenizer(boxed_answers=("7", "8"))
    cfg = tiny_cfg(f"model.vocab_size={len(tok)}", "engine.num_slots=8", "engine.max_seq_len=256",
                   "engine.prefill_buckets=[64,128]", "engine.prefill_chunk=64",
                   "engine.prefill_tokens=128", "engine.truncation=left", *layout)
    policy = Policy(ArchConfig.from_model_config(cfg.model), rngs=nnx.Rngs(3))
    engine = Engine(policy, tok, cfg.engine)
    search_cfg = make_cfg(seed=1, rollouts=3, candidates=3, max_depth=3, trees_in_flight=2,
                          max_new_tokens_per_step=12, temperature=1.0)
    search_cfg = dataclasses.replace(search_cfg, engine=cfg.engine, model=cfg.model)
    report = engine.warmup(stops=STEP_STOPS)  # the search's stops size the decode's tables
    assert report["prefill"]["shapes"] == 2 * 3  # rows {1, 2} x cache lengths {64, 128, 256}
    assert report["total_seconds"] > 0
    if layout:  # and the same shapes again inside decode calls
        assert report["mixed"]["shapes"] == 2 * 3
    driver = MCTSDriver(search_cfg, engine, mock.FakeExecutor(), mock.MockScorer(hashed=True),
                        mock.MOCK_HOOKS)
    done = []
    with count_compiles() as compiles:
        driver.run(add_problems(3), done.append)
    assert len(done) == 3 and driver.timers.engine_calls >= 3
    assert engine.prefix_cache.hits >= 1  # children reused their parents' KV
    assert len(compiles) == 0
    if layout:
        assert engine.core.mixed_calls >= 1


@pytest.mark.parametrize("chunk,budget,row_buckets,rows", [
    (8, 16, None, [1, 2]), (16, 64, None, [1, 2, 4]), (32, 16, None, [1]), (8, 64, "[1,3,16]", [1, 3, 4])])
def test_prefill_shapes_are_bucketed_by_budget(policy, tokenizer, chunk, budget, row_buckets, rows):
    extra = [] if row_buckets is None else [f"engine.prefill_row_buckets={row_buckets}"]
    engine = engine_with(policy, tokenizer, *SMALL, f"engine.prefill_chunk={chunk}",
                         f"engine.prefill_tokens={budget}", *extra)
    assert engine.core.chunk_lengths == [c for c in (8, 16, 32) if c <= chunk]
    assert engine.core.row_buckets[chunk] == rows
