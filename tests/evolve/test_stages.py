"""The built-in stage adapters that need no model: world, problems, model paths."""

import json
import os

from rstar_jax.config import load_config
from rstar_jax.evolve.context import StageContext
from rstar_jax.evolve.stages import model_overrides, problems, with_ppm, world


def _ctx(tmp_path, stage, *overrides):
    cfg = load_config(None, ["data.source=arith", "data.arith_count=6", "data.arith_test_count=3",
                             "data.arith_corpus_count=60", "data.tokenizer_vocab_size=300",
                             "model.vocab_size=320", *overrides])
    ctx = StageContext(cfg=cfg, run_dir=str(tmp_path), round=1 if stage == "problems" else 0, stage=stage)
    os.makedirs(ctx.out_dir, exist_ok=True)
    return ctx


def test_problems_stage_freezes_both_splits(tmp_path):
    ctx = _ctx(tmp_path, "problems")
    out = problems(ctx)
    assert out["counts"] == {"train": 6, "test": 3}
    rows = [json.loads(x) for x in open(out["outputs"]["test"])]
    assert [r["id"] for r in rows] == ["arith-1000003-0", "arith-1000003-1", "arith-1000003-2"]


def test_world_stage_outputs(tmp_path):
    out = world(_ctx(tmp_path, "world"))
    assert set(out["outputs"]) == {"train", "test", "corpus", "tokenizer"}
    assert out["counts"]["corpus"] == 60 and out["counts"]["vocab"] <= 320
    assert os.path.isfile(os.path.join(out["outputs"]["tokenizer"], "tokenizer.json"))


def test_model_overrides_tell_hf_dirs_from_checkpoints(tmp_path):
    cfg = load_config(None)
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    a = model_overrides(cfg, str(hf), "/tok")
    assert (a.model.hf_dir, a.model.checkpoint, a.model.tokenizer_dir) == (str(hf), None, "/tok")
    b = model_overrides(cfg, str(tmp_path / "ckpt"), None)
    assert (b.model.hf_dir, b.model.checkpoint, b.model.tokenizer_dir) == (None, str(tmp_path / "ckpt"), None)
    assert with_ppm(cfg, "/p").ppm.checkpoint == "/p" and with_ppm(cfg, None) == cfg
