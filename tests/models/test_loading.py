"""Vocabulary resizing, tokenizer special tokens, PPM from policy, loading from config."""

import jax
import jax.numpy as jnp
import numpy as np

from rstar_jax.config import MeshConfig, load_config
from rstar_jax.config.schema import DEFAULT_TRAINING_RULES
from rstar_jax.data.prompts import SPECIAL_TOKENS
from rstar_jax.models import (
    PPM,
    ArchConfig,
    Policy,
    flat_params,
    init_model,
    load_policy,
    load_ppm,
    make_mesh,
    ppm_from_policy,
    resize_vocab,
)
from testutil import REPO, pieces_tokenizer

TINY = str(REPO / "configs/models/tiny.yaml")


def tiny_arch(**kw) -> ArchConfig:
    return ArchConfig.from_model_config(load_config(TINY).model).replace(num_layers=1, **kw)


def logits(model, tokens):
    """Jitted forward: far cheaper than op-by-op dispatch on a shared CPU."""
    return jax.jit(lambda m, t: m(t)[0])(model, tokens)


def test_resize_vocab_appends_mean_rows_untied():
    model = init_model(Policy, tiny_arch(tie_word_embeddings=False), seed=0)
    embed, head = np.asarray(model.model.embed[...]), np.asarray(model.lm_head[...])
    tokens = jnp.array([[3, 9, 500]])
    before = logits(model, tokens)
    resize_vocab(model, 520)
    assert model.arch.vocab_size == 520 and model.model.arch.vocab_size == 520
    new_embed, new_head = np.asarray(model.model.embed[...]), np.asarray(model.lm_head[...])
    assert new_embed.shape == (520, 64) and new_head.shape == (64, 520)
    np.testing.assert_array_equal(new_embed[:512], embed)
    np.testing.assert_allclose(new_embed[512:], np.repeat(embed.mean(0, keepdims=True), 8, 0),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(new_head[:, 512:], np.repeat(head.mean(1, keepdims=True), 8, 1),
                               rtol=1e-6, atol=1e-7)
    after = logits(model, tokens)
    np.testing.assert_allclose(np.asarray(after[..., :512]), np.asarray(before), atol=1e-6)
    assert after.shape[-1] == 520


def test_resize_keeps_parameters_sharded():
    mesh = make_mesh(MeshConfig(data=1, fsdp=2, tensor=4))
    model = init_model(Policy, tiny_arch(), mesh=mesh, rules=DEFAULT_TRAINING_RULES)
    resize_vocab(model, 576, mesh=mesh, rules=DEFAULT_TRAINING_RULES)
    assert model.model.embed[...].sharding.spec == jax.P("tensor", "fsdp")  # 576 = 4 x 144
    resize_vocab(model, 577, mesh=mesh, rules=DEFAULT_TRAINING_RULES)
    assert model.model.embed[...].sharding.spec == jax.P(None, "fsdp")  # 577: tensor dropped


def piece_ids(tok, tag: str):
    return tok(tag, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def test_load_policy_adds_tags_with_rows_from_their_pieces(tmp_path):
    # 500 words + 9 rStar tags fit in the 512 rows: no resize, the 9 rows set
    # to the mean of their own text pieces' rows, in the embedding and the head.
    tok_dir = pieces_tokenizer(tmp_path / "tok", 500)
    cfg = load_config(TINY, [f"model.tokenizer_dir={tok_dir}", "model.num_layers=1",
                             "model.tie_word_embeddings=false"])
    policy, tok = load_policy(cfg)
    ids = tok.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    assert sorted(ids) == list(range(500, 509)) and policy.arch.vocab_size == 512
    fresh = init_model(Policy, policy.arch, seed=cfg.seed)
    embed, f_embed = np.asarray(policy.model.embed[...]), np.asarray(fresh.model.embed[...])
    head, f_head = np.asarray(policy.lm_head[...]), np.asarray(fresh.lm_head[...])
    np.testing.assert_array_equal(embed[:500], f_embed[:500])
    np.testing.assert_array_equal(head[:, :500], f_head[:, :500])
    for tag, tid in zip(SPECIAL_TOKENS, ids):
        pieces = piece_ids(tok, tag)
        assert len(pieces) >= 3 and max(pieces) < 500 and 0 not in pieces, (tag, pieces)
        np.testing.assert_allclose(embed[tid], f_embed[pieces].mean(0), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(head[:, tid], f_head[:, pieces].mean(1), rtol=1e-5, atol=1e-7)
    assert len({tuple(embed[i]) for i in ids}) == 9  # not one shared mean row
    np.testing.assert_array_equal(embed[509:], f_embed[509:])
    assert tok("<code> w3 <end_of_step>")["input_ids"] == [ids[0], 3, ids[1]]

    # 510 words + 9 tags overflow 512: the vocabulary grows to the next multiple of 64.
    tok_dir = pieces_tokenizer(tmp_path / "big", 510)
    cfg = load_config(TINY, [f"model.tokenizer_dir={tok_dir}", "model.num_layers=1"])
    policy, tok = load_policy(cfg)
    assert len(tok) == 519 and policy.arch.vocab_size == 576
    assert logits(policy, jnp.array([[518]])).shape == (1, 1, 576)


def test_ppm_from_policy_shares_backbone():
    policy = init_model(Policy, tiny_arch(tie_word_embeddings=False), seed=3)
    ppm = ppm_from_policy(policy, seed=1)
    assert isinstance(ppm, PPM) and not hasattr(ppm, "lm_head")
    p, q = flat_params(policy), flat_params(ppm)
    assert set(q) - set(p) == {"value_kernel", "value_bias"}
    for key in q:
        if key.startswith("model/"):
            assert q[key] is p[key]  # the same arrays, not copies
    tokens = jnp.asarray(np.random.RandomState(0).randint(0, 512, (2, 6)), jnp.int32)
    lengths = jnp.array([6, 4])
    hidden, _ = jax.jit(lambda m, t: m.model(t))(policy, tokens)
    want = hidden[jnp.arange(2), lengths - 1] @ q["value_kernel"] + q["value_bias"]
    got = jax.jit(lambda m, t, n: m(t, n))(ppm, tokens, lengths)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)
    assert float(jnp.std(q["value_kernel"])) > 0.5 * 64 ** -0.5  # a real random head


def test_load_ppm_from_config_on_a_mesh():
    cfg = load_config(TINY, ["model.num_layers=1", "mesh.fsdp=-1"])
    mesh = make_mesh(cfg.mesh)
    ppm, tok = load_ppm(cfg, mesh=mesh)
    policy, _ = load_policy(cfg, mesh=mesh, mode="training")
    assert tok is None and isinstance(ppm, PPM)
    np.testing.assert_array_equal(np.asarray(ppm.model.embed[...]),
                                  np.asarray(policy.model.embed[...]))
    assert ppm.model.embed[...].sharding.spec == jax.P(None, "fsdp")


def test_tags_by_default_for_training_and_fresh_models_not_pretrained_inference(tmp_path):
    """A pretrained model keeps the tags as text at inference unless told otherwise."""
    from rstar_jax.models import export_params

    tok_dir = pieces_tokenizer(tmp_path / "tok", 500)
    base = [f"model.tokenizer_dir={tok_dir}", "model.num_layers=1"]
    model = init_model(Policy, load_policy(load_config(TINY, base))[0].arch, seed=3)
    export_params(model, str(tmp_path / "export"), dtype=jnp.float32)
    pre = base + [f"model.checkpoint={tmp_path / 'export'}"]
    cases = [(base, "inference", 509), (pre, "inference", 500), (pre, "training", 509),
             (pre + ["model.add_special_tokens=true"], "inference", 509),
             (base + ["model.add_special_tokens=false"], "training", 500)]
    for overrides, mode, size in cases:
        policy, tok = load_policy(load_config(TINY, overrides), mode=mode)
        assert len(tok) == size, (overrides, mode)
    policy, tok = load_policy(load_config(TINY, pre))
    np.testing.assert_array_equal(np.asarray(policy.model.embed[...]),
                                  np.asarray(model.model.embed[...]))
    assert tok("<code>")["input_ids"] == piece_ids(tok, "<code>")  # plain text
