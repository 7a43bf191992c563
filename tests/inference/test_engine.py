"""The engine against the model's own forward pass, token for token."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from inference.inference_helpers import tiny_arch, tiny_cfg

from rstar_jax.inference import Engine, GenerationRequest, PromptTooLongError, SamplingParams
from rstar_jax.models import Policy
from testutil import count_compiles

# Small buckets so short prompts cross bucket boundaries (context 7 -> 8, 9 -> 16, 17 -> 32).
SMALL = ("engine.num_slots=4", "engine.max_seq_len=64", "engine.prefill_buckets=[8,16,32]",
         "engine.decode_steps_per_call=4")
WORDS = ("x = 3 + 4 * 5 print the answer is 23 def f(n): return n step by step solve "
         "the problem with code import math sqrt total cost dollars").split()


def make_engine(policy, tokenizer, *overrides):
    return Engine(policy, tokenizer, tiny_cfg(*SMALL, *overrides).engine)


@pytest.fixture(scope="module")
def engine(policy, tokenizer):
    """One engine shared by the tests that use the default small config (its
    compiled functions are reused; every test leaves all slots free)."""
    return make_engine(policy, tokenizer)


@nnx.jit
def _forward(model, tokens):
    return model(tokens)[0]


def prompt_with_tokens(tokenizer, n, offset=0):
    """A text prompt of exactly `n` tokens."""
    words, text = offset, ""
    while len(tokenizer.encode(text)) < n:
        text += WORDS[words % len(WORDS)] + " "
        words += 1
    ids = tokenizer.encode(text)[:n]
    out = tokenizer.decode(ids)
    assert tokenizer.encode(out) == ids
    return out


def teacher_forced(policy, prompt_ids, generated):
    """Argmax and log-probs of the full forward pass at each generated position."""
    seq = list(prompt_ids) + list(generated)
    full = np.zeros((1, 96), np.int32)  # right padding cannot change causal logits
    full[0, : len(seq)] = seq
    logits = _forward(policy, jnp.asarray(full))[0, len(prompt_ids) - 1: len(seq) - 1]
    lp = jax.nn.log_softmax(logits, -1)
    return np.asarray(jnp.argmax(logits, -1)), np.asarray(lp[jnp.arange(len(generated)), jnp.asarray(generated)])


def test_greedy_equals_teacher_forced_argmax_across_buckets_and_slot_reuse(engine, policy, tokenizer):
    lengths = [3, 8, 9, 16, 17, 30, 1, 12]  # 8 prompts through 4 slots: every slot reused
    prompts = [prompt_with_tokens(tokenizer, n, i) for i, n in enumerate(lengths)]
    out = engine.generate(prompts, n=1, max_new_tokens=13, temperature=0.0)
    for prompt, (c,) in zip(prompts, out):
        ids = tokenizer.encode(prompt)
        assert c.num_prompt_tokens == len(ids)
        if c.stop_reason == "eos":
            assert c.token_ids[-1] == tokenizer.eos_token_id and len(c.token_ids) <= 13
        else:
            assert c.stop_reason == "length" and len(c.token_ids) == 13
        argmax, lp = teacher_forced(policy, ids, c.token_ids)
        np.testing.assert_array_equal(np.asarray(c.token_ids), argmax)
        np.testing.assert_allclose(c.logprob, lp.sum(), rtol=1e-5, atol=1e-4)
    assert sorted(engine.free_slots) == [0, 1, 2, 3] and not engine.slot_jobs


def test_candidates_share_one_prefill_and_greedy_candidates_agree(policy, tokenizer):
    engine = make_engine(policy, tokenizer, "engine.prefix_cache=false")
    calls = []
    real = engine.core.prefill_rows
    engine.core.prefill_rows = lambda rows, **k: calls.append(len(rows)) or real(rows, **k)
    (cands,) = engine.generate([GenerationRequest(prompt_with_tokens(tokenizer, 11),
                                                  SamplingParams(n=6, max_new_tokens=5, temperature=0))])
    assert calls == [1]  # 6 candidates (two waves of slots) from one prefill of one row
    assert len({c.token_ids for c in cands}) == 1


def test_stop_string_spanning_several_tokens_ends_generation_there(engine, policy, tokenizer):
    prompt = prompt_with_tokens(tokenizer, 6)
    (free,) = engine.generate([prompt], max_new_tokens=16, temperature=0.0)[0]
    ids = list(free.token_ids)
    ends = [len(tokenizer.decode(ids[:k])) for k in range(len(ids) + 1)]
    # A stop string starting inside token i and ending inside token j > i + 2.
    multi = [k for k in range(len(ids)) if ends[k + 1] - ends[k] >= 2]
    i = multi[0]
    j = next(k for k in multi if k > i + 2)
    a, b = ends[i] + 1, ends[j] + 1
    stop = free.text[a:b]
    assert free.text.find(stop) == a and len(tokenizer.encode(stop)) >= 3
    (c,) = engine.generate([GenerationRequest(prompt, SamplingParams(
        max_new_tokens=16, temperature=0.0, stop=("never-seen", stop)))])[0]
    assert c.stop_reason == "stop" and c.stop_string == stop
    assert c.text == free.text[:b] and c.text.endswith(stop)
    assert c.token_ids == tuple(ids[: j + 1])


def test_prefix_cache_reuses_parent_kv_without_changing_output(policy, tokenizer):
    parent = prompt_with_tokens(tokenizer, 20)
    child = parent + " total cost is"
    cold = make_engine(policy, tokenizer, "engine.prefix_cache=false")
    warm = make_engine(policy, tokenizer)
    warm.generate([parent], max_new_tokens=3, temperature=0.0)
    got = warm.generate([child], max_new_tokens=9, temperature=0.0)[0][0]
    assert warm.prefix_cache.hits >= 1 and warm.prefix_cache.reused_tokens >= 16
    ref = cold.generate([child], max_new_tokens=9, temperature=0.0)[0][0]
    assert (got.token_ids, got.text, got.stop_reason) == (ref.token_ids, ref.text, ref.stop_reason)
    np.testing.assert_allclose(got.logprob, ref.logprob, rtol=1e-5)


def test_second_call_with_new_bucketed_prompts_compiles_nothing(policy, tokenizer):
    engine = make_engine(policy, tokenizer)
    with count_compiles() as compiles:
        kw = dict(n=2, max_new_tokens=10, temperature=0.8, stop=("<end_of_step>",))
        engine.warmup()
        warm = len(compiles)
        # Prompts in every prefill bucket (contexts of 4, 11, 19 tokens: buckets 8, 16, 32).
        engine.generate([prompt_with_tokens(tokenizer, n, i) for i, n in enumerate((5, 12, 20))], **kw)
        first = len(compiles)
        engine.generate([prompt_with_tokens(tokenizer, n, i) for i, n in zip((7, 11, 15), (7, 14, 25))],
                        **kw)
        # A child extending a parent of an earlier call (prefix cache hit), the
        # shape the search produces.
        parent = prompt_with_tokens(tokenizer, 18, 3)
        engine.generate([parent], **kw)
        engine.generate([parent + " step by step"], **kw)
        assert engine.prefix_cache.hits >= 1
    assert warm > 0 and first == warm and len(compiles) == warm


def test_seeded_samples_do_not_depend_on_the_batch(engine, policy, tokenizer):
    req = GenerationRequest(prompt_with_tokens(tokenizer, 9),
                            SamplingParams(n=3, max_new_tokens=8, temperature=1.0, seed=42))
    others = [GenerationRequest(prompt_with_tokens(tokenizer, 4 + i, i),
                                SamplingParams(n=2, max_new_tokens=6, temperature=1.0, seed=i))
              for i in range(3)]
    alone = engine.generate([req])[0]
    mixed = engine.generate(others[:2] + [req] + others[2:])[2]
    assert [c.token_ids for c in alone] == [c.token_ids for c in mixed]
    assert len({c.token_ids for c in alone}) == 3  # candidates draw different streams
    reseeded = engine.generate([GenerationRequest(req.prompt, SamplingParams(
        n=3, max_new_tokens=8, temperature=1.0, seed=43))])[0]
    assert [c.token_ids for c in reseeded] != [c.token_ids for c in alone]


def test_top_k_one_through_the_engine_is_greedy(engine, policy, tokenizer):
    prompts = [prompt_with_tokens(tokenizer, n) for n in (5, 13)]
    greedy = engine.generate(prompts, max_new_tokens=10, temperature=0.0)
    topk1 = engine.generate(prompts, n=2, max_new_tokens=10, temperature=1.5, top_k=1, seed=3)
    for g, t in zip(greedy, topk1):
        assert all(c.token_ids == g[0].token_ids for c in t)


class _Counting:
    """A tokenizer that records each `encode`."""

    def __init__(self, tok, calls):
        self._tok, self._calls = tok, calls

    def encode(self, text, **kw):
        self._calls.append(text)
        return self._tok.encode(text, **kw)

    def __getattr__(self, name):
        return getattr(self._tok, name)


def test_over_long_prompts_error_or_truncate_as_configured(policy, tokenizer):
    long_prompt = prompt_with_tokens(tokenizer, 80)
    strict = make_engine(policy, tokenizer)
    with pytest.raises(PromptTooLongError, match="max_seq_len 64"):
        strict.generate([long_prompt], max_new_tokens=2)
    # What a search asks first (it ends such a path rather than the search).
    assert not strict.prompt_fits(long_prompt)
    assert strict.prompt_fits(prompt_with_tokens(tokenizer, 63))
    assert not strict.prompt_fits(prompt_with_tokens(tokenizer, 64))
    # A prompt asked about is tokenized once: `generate` takes the ids kept.
    fits = prompt_with_tokens(tokenizer, 20)
    calls = []
    strict.tokenizer = _Counting(tokenizer, calls)
    try:
        assert strict.prompt_fits(fits)
        want = strict.generate([fits], max_new_tokens=3, temperature=0.0)
        assert len(calls) == 1 and fits not in strict._asked  # taken by generate
        assert long_prompt not in strict._asked  # a prompt that does not fit is not kept
        strict.generate([fits], max_new_tokens=3, temperature=0.0)  # not asked: encoded afresh
        assert len(calls) == 2
    finally:
        strict.tokenizer = tokenizer
    assert strict.generate([fits], max_new_tokens=3, temperature=0.0) == want
    ids = tokenizer.encode(long_prompt)
    for mode, kept in (("left", ids[-63:]), ("right", ids[:63])):
        cut = make_engine(policy, tokenizer, f"engine.truncation={mode}")
        assert cut.prompt_fits(long_prompt)
        (c,) = cut.generate([long_prompt], max_new_tokens=5, temperature=0.0)[0]
        assert c.num_prompt_tokens == 63 and c.stop_reason == "length"
        assert len(c.token_ids) == 1  # position 63 is the last the context holds
        argmax, _ = teacher_forced(policy, kept, c.token_ids)
        np.testing.assert_array_equal(np.asarray(c.token_ids), argmax)


def test_bad_sampling_parameters_are_rejected(engine, policy, tokenizer):
    with pytest.raises(ValueError, match="top_p"):
        engine.generate(["x"], top_p=0.0)
    with pytest.raises(ValueError, match="empty prompt"):
        engine.generate([""])


def test_sharded_engine_on_eight_devices_matches_one_device(tokenizer):
    from jax.sharding import AxisType

    assert jax.device_count() == 8
    cfg = tiny_cfg(*SMALL, "engine.num_slots=8")
    policy = Policy(tiny_arch(cfg), rngs=nnx.Rngs(0))
    prompts = [prompt_with_tokens(tokenizer, n, n) for n in (4, 9, 17, 11)]
    kw = dict(n=2, max_new_tokens=9, temperature=0.0)
    single = Engine(policy, tokenizer, cfg.engine).generate(prompts, **kw)
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
    sharded_engine = Engine(policy, tokenizer, cfg.engine, mesh=mesh, rules=cfg.mesh.inference_rules)
    cache_k = sharded_engine.core.state["cache"][0][0]
    if sharded_engine.paged:  # a page pool [K, P, ps, Dh]: heads over tensor, pages whole
        assert cache_k.sharding.spec[0] == "tensor" and len(cache_k.sharding.spec) == 1
    else:
        assert cache_k.sharding.spec[0] == ("data", "fsdp")  # slots over data x fsdp
    sharded = sharded_engine.generate(prompts, **kw)
    assert [[c.token_ids for c in r] for r in sharded] == [[c.token_ids for c in r] for r in single]
