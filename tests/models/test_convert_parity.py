"""Parity with transformers' PyTorch Qwen2 / Llama, both conversion directions,
and `rstar-jax convert` round trips.

Tiny random configs in float32; logits must agree within 1e-4. Every
weight (biases and norm scales included) is random, so a swapped or
untransposed tensor cannot hide behind a zero or a one.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.numpy import load_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from rstar_jax.cli import main
from rstar_jax.models import PPM, ArchConfig, Policy, flat_params, load_hf
from rstar_jax.models.convert import hf_config, params_to_hf, write_safetensors
from rstar_jax.models.loading import assemble, init_model

TOL = 1e-4

SHAPES = {
    # name: (family, hidden, inter, layers, heads, kv_heads, head_dim, vocab, tied, theta)
    "qwen2-gqa2-tied": ("qwen2", 64, 96, 2, 4, 2, None, 101, True, 10000.0),
    "qwen2-gqa6-untied": ("qwen2", 48, 72, 2, 6, 1, 8, 67, False, 1e6),
    "llama-mha-untied": ("llama", 40, 56, 2, 5, 5, None, 83, False, 100000.0),
    "llama-headdim32-tied": ("llama", 64, 88, 3, 4, 2, 32, 97, True, 5000.0),
}


def hf_model(name: str, seed: int = 0):
    family, hidden, inter, layers, heads, kv, head_dim, vocab, tied, theta = SHAPES[name]
    cls_cfg, cls_model = (Qwen2Config, Qwen2ForCausalLM) if family == "qwen2" else (
        LlamaConfig, LlamaForCausalLM)
    kw = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter,
              num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
              rope_theta=theta, rms_norm_eps=1e-6, tie_word_embeddings=tied,
              max_position_embeddings=256)
    if head_dim:
        kw["head_dim"] = head_dim
    torch.manual_seed(seed)
    model = cls_model(cls_cfg(**kw, attn_implementation="eager")).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("bias") or "norm" in pname:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "norm" in pname else 0.0))
    return model


def torch_logits(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(tokens, dtype=torch.long)).logits.float().numpy()


def tokens_for(vocab: int, shape=(2, 9), seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, vocab, shape)


def randomize(model: nnx.Module, seed: int) -> nnx.Module:
    """Every parameter random (our init leaves biases at zero, norms at one)."""
    rng = np.random.RandomState(seed)
    new = {k: jnp.asarray(0.1 * rng.randn(*v.shape) + (1.0 if "norm" in k else 0.0), v.dtype)
           for k, v in sorted(flat_params(model).items())}
    return assemble(model, new)


# One jitted forward for every model here (op-by-op dispatch is slow on a busy CPU).
FORWARD = jax.jit(lambda model, tokens: model(tokens)[0])


@pytest.mark.parametrize("name", list(SHAPES))
def test_hf_to_ours_logits_match(name, tmp_path):
    ref = hf_model(name)
    ref.save_pretrained(tmp_path)  # config.json + model.safetensors, as on the hub
    ours = load_hf(Policy, str(tmp_path))
    assert ours.arch.tie_word_embeddings == SHAPES[name][8]
    toks = tokens_for(ours.arch.vocab_size)
    got = FORWARD(ours, jnp.asarray(toks, jnp.int32))
    want = torch_logits(ref, toks)
    assert got.dtype == jnp.float32 and got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got), want, atol=TOL, rtol=0)


@pytest.mark.parametrize("name", ["qwen2-gqa6-untied", "llama-headdim32-tied"])
def test_ours_to_hf_reproduces_our_logits(name, tmp_path):
    hf_cfg = hf_model(name).config.to_dict()
    arch = ArchConfig.from_hf_dict(hf_cfg)
    ours = randomize(init_model(Policy, arch, seed=3), seed=4)
    host = {k: np.asarray(v) for k, v in flat_params(ours).items()}
    write_safetensors({k: torch_ready(v) for k, v in params_to_hf(host, arch).items()}, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(hf_config(arch)))
    cls = Qwen2ForCausalLM if arch.family == "qwen2" else LlamaForCausalLM
    ref = cls.from_pretrained(tmp_path, attn_implementation="eager").eval()
    toks = tokens_for(arch.vocab_size, (3, 7), seed=1)
    got = FORWARD(ours, jnp.asarray(toks, jnp.int32))
    np.testing.assert_allclose(torch_logits(ref, toks), np.asarray(got), atol=TOL, rtol=0)


def torch_ready(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.astype(np.float32))


def test_reference_value_head_converts(tmp_path):
    """A trl-style PPM (`v_head.summary.*`, backbone under `pretrained_model.`)."""
    ref = hf_model("qwen2-gqa2-tied", seed=5)
    hidden = ref.config.hidden_size
    w = np.random.RandomState(2).randn(1, hidden).astype(np.float32)
    b = np.array([0.3], np.float32)
    tensors = {f"pretrained_model.{k}": v.numpy() for k, v in ref.state_dict().items()
               if k != "lm_head.weight"}
    tensors.update({"v_head.summary.weight": w, "v_head.summary.bias": b})
    write_safetensors(tensors, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(ref.config.to_dict()))
    ppm = load_hf(PPM, str(tmp_path))
    toks = tokens_for(ref.config.vocab_size, (2, 8), seed=3)
    lengths = np.array([8, 5])
    raw = np.asarray(jax.jit(lambda m, t, n: m(t, n))(ppm, jnp.asarray(toks, jnp.int32),
                                                       jnp.asarray(lengths)))
    with torch.no_grad():
        hs = ref(torch.as_tensor(toks), output_hidden_states=True).hidden_states[-1].numpy()
    last = hs[np.arange(2), lengths - 1]  # [B, D] after the final norm
    np.testing.assert_allclose(raw, last @ w[0] + b[0], atol=TOL, rtol=0)


def test_missing_tensor_names_the_weight(tmp_path):
    ref = hf_model("llama-mha-untied")
    state = {k: v.numpy() for k, v in ref.state_dict().items() if "layers.1.mlp.up" not in k}
    write_safetensors(state, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(ref.config.to_dict()))
    with pytest.raises(KeyError, match="model.layers.1.mlp.up_proj.weight"):
        load_hf(Policy, str(tmp_path))


def test_unsupported_rope_scaling_is_refused():
    cfg = hf_model("llama-mha-untied").config.to_dict()
    cfg["rope_parameters"] = {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}
    with pytest.raises(ValueError, match="llama3"):
        ArchConfig.from_hf_dict(cfg)


# --- the CLI ---------------------------------------------------------------------

def test_convert_round_trip_policy(tmp_path, capsys):
    """No --dtype: the source's float32 is kept, so the round trip is exact."""
    from rstar_jax.models.checkpoint import read_export_info

    ref = hf_model("qwen2-gqa6-untied", seed=9)
    ref.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "tokenizer_config.json").write_text('{"model_max_length": 64}')
    assert main(["convert", "hf-to-ckpt", "--hf-dir", str(tmp_path / "hf"),
                 "--out", str(tmp_path / "ckpt")]) == 0
    assert read_export_info(str(tmp_path / "ckpt"))["arch"]["param_dtype"] == "float32"
    assert (tmp_path / "ckpt" / "tokenizer" / "tokenizer_config.json").exists()
    assert main(["convert", "ckpt-to-hf", "--ckpt", str(tmp_path / "ckpt"),
                 "--out", str(tmp_path / "back")]) == 0
    assert "wrote HF model" in capsys.readouterr().out
    before = load_file(str(tmp_path / "hf" / "model.safetensors"))
    after = load_file(str(tmp_path / "back" / "model.safetensors"))
    assert set(before) == set(after)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"] and config["head_dim"] == 8
    assert (tmp_path / "back" / "tokenizer_config.json").exists()
    back = Qwen2ForCausalLM.from_pretrained(tmp_path / "back", attn_implementation="eager").eval()
    toks = tokens_for(67, (2, 6), seed=4)
    np.testing.assert_allclose(torch_logits(back, toks), torch_logits(ref, toks), atol=1e-4)


def test_convert_round_trip_reference_ppm(tmp_path):
    ref = hf_model("llama-headdim32-tied", seed=2)
    tensors = {k: v.numpy() for k, v in ref.state_dict().items() if k != "lm_head.weight"}
    tensors["v_head.summary.weight"] = np.random.RandomState(0).randn(1, 64).astype(np.float32)
    tensors["v_head.summary.bias"] = np.array([-0.5], np.float32)
    write_safetensors(tensors, tmp_path / "hf")
    (tmp_path / "hf" / "config.json").write_text(json.dumps(ref.config.to_dict()))
    assert main(["convert", "hf-to-ckpt", "--hf-dir", str(tmp_path / "hf"), "--ppm",
                 "--out", str(tmp_path / "ckpt"), "--dtype", "float32"]) == 0
    assert main(["convert", "ckpt-to-hf", "--ckpt", str(tmp_path / "ckpt"),
                 "--out", str(tmp_path / "back")]) == 0
    after = load_file(str(tmp_path / "back" / "model.safetensors"))
    assert set(after) == set(tensors)
    for name, value in tensors.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)


def test_convert_keeps_a_bfloat16_source_bfloat16(tmp_path):
    from rstar_jax.models.checkpoint import read_export_info

    hf_model("llama-headdim32-tied", seed=3).to(torch.bfloat16).save_pretrained(tmp_path / "hf")
    assert main(["convert", "hf-to-ckpt", "--hf-dir", str(tmp_path / "hf"),
                 "--out", str(tmp_path / "ckpt")]) == 0
    assert read_export_info(str(tmp_path / "ckpt"))["arch"]["param_dtype"] == "bfloat16"


def test_convert_bad_input_exits_2(tmp_path, capsys):
    assert main(["convert", "ckpt-to-hf", "--ckpt", str(tmp_path / "none"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
