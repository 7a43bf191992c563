"""Orbax checkpoints: cross-mesh restore, metadata and extras, keep-N, exports."""

import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rstar_jax.config import MeshConfig, load_config, to_dict
from rstar_jax.config.schema import (
    DEFAULT_INFERENCE_RULES,
    DEFAULT_TRAINING_RULES,
    CheckpointConfig,
)
from rstar_jax.models import (
    PPM,
    ArchConfig,
    Checkpointer,
    Policy,
    export_params,
    flat_params,
    init_model,
    latest_step,
    load_checkpoint,
    load_exported,
    make_mesh,
    restore,
)
from rstar_jax.models.loading import abstract_model
from testutil import REPO, pieces_tokenizer

TINY = str(REPO / "configs/models/tiny.yaml")


def tiny_arch(**kw) -> ArchConfig:
    return ArchConfig.from_model_config(load_config(TINY).model).replace(num_layers=1, **kw)


def host(model):
    return {k: np.asarray(v) for k, v in flat_params(model).items()}


def test_save_on_one_mesh_restore_on_another_bit_equal(tmp_path):
    arch = tiny_arch(tie_word_embeddings=False)
    saved_on = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    model = init_model(Policy, arch, mesh=saved_on, rules=DEFAULT_TRAINING_RULES, seed=7)
    with Checkpointer(str(tmp_path / "ckpt"), CheckpointConfig(async_save=True)) as ckpt:
        assert ckpt.save(10, model)
    want = host(model)

    other = make_mesh(MeshConfig(data=1, fsdp=2, tensor=4))
    target = abstract_model(Policy, arch)
    got = restore(str(tmp_path / "ckpt"), target, mesh=other, rules=DEFAULT_INFERENCE_RULES).model
    for key, value in flat_params(got).items():
        np.testing.assert_array_equal(np.asarray(value), want[key])
        assert value.sharding.mesh.shape == other.shape
    assert flat_params(got)["lm_head"].sharding.spec == jax.P(None, "tensor")  # [D, V]
    # No target at all: the stored arch rebuilds the model on the default device.
    plain = restore(str(tmp_path / "ckpt")).model
    assert isinstance(plain, Policy) and plain.arch == arch
    for key, value in host(plain).items():
        np.testing.assert_array_equal(value, want[key])


def test_metadata_and_extras_round_trip(tmp_path):
    cfg = load_config(TINY, ["train.seed=5", "run_name=meta"])
    arch = tiny_arch()
    model = init_model(PPM, arch, seed=1)
    params = {"w": jnp.arange(6.0).reshape(2, 3)}
    opt_state = optax.adamw(1e-3).init(params)
    extra = {"data_iter": b'{"pos": 17}', "loop": {"epoch": 2, "best": 0.25},
             "opt_state": opt_state}
    with Checkpointer(str(tmp_path), config=cfg) as ckpt:
        ckpt.save(3, model, extra=extra, round=2)
    with Checkpointer(str(tmp_path)) as ckpt:
        out = ckpt.restore(abstract_model(PPM, arch), extra_targets={
            "opt_state": jax.eval_shape(lambda: opt_state)})
    meta = out.metadata
    assert (meta["step"], meta["round"], meta["kind"]) == (3, 2, "ppm")
    assert ArchConfig.from_dict(meta["arch"]) == arch
    assert meta["config"] == to_dict(cfg) and meta["config"]["run_name"] == "meta"
    git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                         text=True)
    assert meta["git_revision"] == (git.stdout.strip() if git.returncode == 0 else None)
    assert out.extra["data_iter"] == b'{"pos": 17}'
    assert out.extra["loop"] == {"epoch": 2, "best": 0.25}
    restored_opt = out.extra["opt_state"]
    assert jax.tree.structure(restored_opt) == jax.tree.structure(opt_state)
    for a, b in zip(jax.tree.leaves(restored_opt), jax.tree.leaves(opt_state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert isinstance(out.model, PPM)


def test_keep_n_and_latest_step(tmp_path):
    model = init_model(Policy, tiny_arch(), seed=0)
    with Checkpointer(str(tmp_path), CheckpointConfig(keep=2, async_save=False)) as ckpt:
        for step in (1, 2, 3, 4):
            ckpt.save(step, model)
        ckpt.wait()
        assert ckpt.all_steps() == [3, 4]
    assert latest_step(str(tmp_path)) == 4
    assert latest_step(str(tmp_path / "absent")) is None


def test_bf16_export_and_notebook_loading(tmp_path):
    arch = tiny_arch()
    model = init_model(Policy, arch, seed=2)
    mesh = make_mesh(MeshConfig(data=1, fsdp=-1, tensor=1))
    export_params(model, str(tmp_path / "export"))
    back = load_exported(str(tmp_path / "export"))
    assert back.arch.param_dtype == jnp.bfloat16
    for key, value in host(model).items():
        got = np.asarray(flat_params(back)[key])
        assert got.dtype == jnp.bfloat16
        np.testing.assert_array_equal(got, value.astype(jnp.bfloat16))
    wide = load_exported(str(tmp_path / "export"), mesh=mesh, rules=DEFAULT_TRAINING_RULES,
                         dtype=jnp.float32)
    assert flat_params(wide)["model/embed"].dtype == jnp.float32
    assert flat_params(wide)["model/embed"].sharding.spec == jax.P(None, "fsdp")

    with Checkpointer(str(tmp_path / "run")) as ckpt:
        ckpt.save(5, model)
    for path in (tmp_path / "run", tmp_path / "run" / "5", tmp_path / "export"):
        policy, tok = load_checkpoint(str(path))
        assert isinstance(policy, Policy) and tok is None
    with pytest.raises(FileNotFoundError):
        load_checkpoint(str(tmp_path / "nothing"))


def test_notebook_tokenizer_is_the_engines(tmp_path):
    """`load_checkpoint` gives the same ids and vocabulary as the engine's loader."""
    from rstar_jax.data.tokenizer import load_tokenizer
    from rstar_jax.inference import load_policy_engine

    base_tok, _ = load_tokenizer(pieces_tokenizer(tmp_path / "tok", 500), add_special_tokens=False)
    tagged_tok, _ = load_tokenizer(str(tmp_path / "tok"))
    model = init_model(Policy, tiny_arch(), seed=4)
    export_params(model, str(tmp_path / "export"), dtype=jnp.float32, tokenizer=base_tok)
    with Checkpointer(str(tmp_path / "run"), tokenizer=tagged_tok) as ckpt:  # a tuned model's
        ckpt.save(1, model)
    text = "<|user|>: w7 <code> w3 <end_of_step> w9 <end_of_code>"
    for path, extra, size in [(tmp_path / "export", [], 500),
                              (tmp_path / "export", ["model.add_special_tokens=true"], 509),
                              (tmp_path / "run", [], 509), (tmp_path / "run" / "1", [], 509)]:
        cfg = load_config(TINY, [f"model.checkpoint={path}", "engine.num_slots=2"] + extra)
        engine = load_policy_engine(cfg)
        add = cfg.model.add_special_tokens
        policy, tok = load_checkpoint(str(path), add_special_tokens=add)
        assert len(tok) == len(engine.tokenizer) == size, (path, extra)
        assert tok(text)["input_ids"] == engine.tokenizer(text)["input_ids"]
        assert policy.arch.vocab_size == engine.vocab_size
