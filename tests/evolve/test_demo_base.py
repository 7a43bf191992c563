"""The demo's shipped base model (configs/demo/base_model/, made by
scripts/make_demo_base.py): it is what its provenance says, it fits the
demo's model config and the world the demo makes, it is a trained model
(not an initialisation), and a run whose world has another tokenizer is
refused before any model loads."""

import hashlib
import json

import jax.numpy as jnp
import numpy as np
import pytest

from rstar_jax.config.loader import load_config
from rstar_jax.evolve.context import MissingInput, StageContext
from rstar_jax.evolve.runner import run_evolve
from testutil import REPO

BASE = REPO / "configs/demo/base_model"
DEMO = str(REPO / "configs/demo/evolve.yaml")


def _provenance():
    return json.loads((BASE / "PROVENANCE.json").read_text())


def test_shipped_files_match_their_recorded_hashes():
    recorded = _provenance()["sha256"]
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(recorded)
    for name, digest in recorded.items():
        assert hashlib.sha256((BASE / name).read_bytes()).hexdigest() == digest, name


def test_shipped_base_has_the_demo_models_shape():
    cfg = load_config(DEMO)
    hf = json.loads((BASE / "config.json").read_text())
    m = cfg.model
    assert (hf["hidden_size"], hf["intermediate_size"], hf["num_hidden_layers"],
            hf["num_attention_heads"], hf["num_key_value_heads"]) == (
        m.hidden_size, m.intermediate_size, m.num_layers, m.num_heads, m.num_kv_heads)
    assert hf["vocab_size"] == m.vocab_size and hf["torch_dtype"] == "float32"
    prov = _provenance()
    assert prov["pretrain"]["counts"]["steps"] == cfg.evolve.pretrain.max_steps
    assert prov["runtime"]["xla_cpu_deterministic"] is True


def _context(run, cfg, round_=1):
    return StageContext(cfg=cfg, run_dir=str(run), round=round_, stage="search")


def test_the_demo_world_makes_the_shipped_tokenizer_and_another_world_is_refused(tmp_path):
    """The stages encode with the world's tokenizer: the shipped base must
    have been trained with exactly it, else the run stops with a clear
    error naming the fix (not a model fed other ids)."""
    run = tmp_path / "demo"
    run_evolve(DEMO, str(run), ["logging.progress=false"], only="round0.world", echo=lambda s: None)
    cfg = load_config(DEMO)
    assert _context(run, cfg).base_model() == str(BASE)  # the world's tokenizer is the base's

    other = tmp_path / "other"
    small = ["data.arith_corpus_count=100", "logging.progress=false"]
    run_evolve(DEMO, str(other), small, only="round0.world", echo=lambda s: None)
    with pytest.raises(MissingInput, match="another tokenizer"):
        _context(other, load_config(DEMO, small)).base_model()


def test_shipped_base_predicts_its_corpus(tmp_path):
    """A trained model: its loss on the world's corpus (encoded as the
    pretraining encodes it) is near the pretraining's, far below an
    untrained model's log(vocab)."""
    from rstar_jax.data.tokenizer import load_tokenizer
    from rstar_jax.models.decoder import Policy
    from rstar_jax.models.loading import load_hf
    from rstar_jax.training.records import load_examples

    run = tmp_path / "demo"
    run_evolve(DEMO, str(run), ["logging.progress=false"], only="round0.world", echo=lambda s: None)
    corpus = tmp_path / "some.jsonl"
    corpus.write_text("".join((run / "round_0/world/corpus.jsonl").read_text().splitlines(True)[:8]))
    tokenizer, added = load_tokenizer(str(BASE))
    assert added == 0  # the world's tokenizer already holds the rStar tags
    examples, _ = load_examples(str(corpus), tokenizer, kind="lm", seq_len=512)
    width = max(e.length for e in examples)
    inputs = np.zeros((len(examples), width), np.int32)
    targets, weights = np.zeros_like(inputs), np.zeros((len(examples), width))
    for i, e in enumerate(examples):
        inputs[i, :e.length], targets[i, :e.length], weights[i, :e.length] = (
            e.inputs, e.targets, e.weights)
    logits, _ = load_hf(Policy, str(BASE))(jnp.asarray(inputs))
    logits = np.asarray(logits, np.float64)
    top = logits.max(-1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    loss = float((nll * weights).sum() / weights.sum())
    final = _provenance()["pretrain"]["metrics"]["pretrain_loss"]
    assert loss < 3 * final + 0.05 and loss < 0.1 * np.log(load_config(DEMO).model.vocab_size), (
        loss, final)


def test_training_starts_from_an_hf_base(tmp_path):
    """Round 1's SFT and PPM start from the base model, which may be an HF
    directory (the shipped base; a pretrained Qwen): its weights, not a
    search for one of our checkpoints there. The PPM gets the backbone
    with a fresh value head."""
    import jax

    from rstar_jax.data.tokenizer import load_tokenizer
    from rstar_jax.models.loading import is_hf_dir
    from rstar_jax.models.mesh import make_mesh
    from rstar_jax.training import state as st

    assert is_hf_dir(str(BASE)) and not is_hf_dir(str(tmp_path))
    cfg = load_config(DEMO)
    tok, _ = load_tokenizer(str(BASE))
    mesh = make_mesh(cfg.mesh)
    _, policy, _, arch = st.load_for_training(cfg, "policy", mesh, init_from=str(BASE), tokenizer=tok)
    _, ppm, _, ppm_arch = st.load_for_training(cfg, "ppm", mesh, init_from=str(BASE), tokenizer=tok)
    assert arch.hidden_size == ppm_arch.hidden_size == cfg.model.hidden_size
    from rstar_jax.models.convert import HFTensors

    embed = np.asarray(HFTensors(str(BASE))["model.embed_tokens.weight"])
    leaves = {jax.tree_util.keystr(k): np.asarray(v) for k, v in
              jax.tree_util.tree_leaves_with_path(policy)}
    assert any(v.shape == embed.shape and np.array_equal(v, embed) for v in leaves.values())
    ppm_leaves = [np.asarray(v) for v in jax.tree_util.tree_leaves(ppm)]
    assert any(v.shape == embed.shape and np.array_equal(v, embed) for v in ppm_leaves)
