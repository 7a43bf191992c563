"""The built-in stage adapters that need no model: world, problems, model paths."""

import json
import os

import pytest

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


def _fake_module(monkeypatch, name, **attrs):
    import sys
    import types

    mod = types.ModuleType(name)
    for k, v in attrs.items():
        setattr(mod, k, v)
    monkeypatch.setitem(sys.modules, name, mod)


def _finished(run_dir, rnd, stage, outputs):
    from rstar_jax.evolve.manifest import write_manifest

    d = os.path.join(run_dir, f"round_{rnd}", stage)
    os.makedirs(d, exist_ok=True)
    write_manifest(d, {"outputs": outputs})


def test_eval_stage_maps_harness_summaries_to_report_metrics(tmp_path, monkeypatch):
    from rstar_jax.evolve.stages import evaluate

    seen = {}

    def evaluate_methods(cfg, problems, methods, out_dir):
        seen.update(methods=list(methods), policy=cfg.model.checkpoint, ppm=cfg.ppm.checkpoint,
                    n=len(problems))
        for m in ("best_of_n", "mcts_ppm"):  # what the harness stores: scored candidates
            os.makedirs(os.path.join(out_dir, m, "test"))
            with open(os.path.join(out_dir, m, "test", "results.jsonl"), "w") as f:
                f.write(json.dumps({"id": "a", "benchmark": "test", "method": m, "question": "q",
                                    "gold": "7", "preds": ["7", "8"], "scores": [0.2, 0.5],
                                    "meta": {"level": 3}}) + "\n")
        return {"greedy": {"accuracy": 37.5}, "mcts_ppm": {"accuracy": 62.5},
                "best_of_n": {"accuracy": 50.0, "best@k": 50.0, "maj@k": 43.75, "k": 8}}

    _fake_module(monkeypatch, "rstar_jax.evaluation.harness", evaluate_methods=evaluate_methods)
    run = str(tmp_path)
    ctx = _ctx(tmp_path, "problems")
    problems(ctx)
    _finished(run, 2, "problems", {"test": os.path.join(run, "round_1", "problems", "test.jsonl")})
    _finished(run, 2, "sft", {"model": "/m/sft2"})
    _finished(run, 2, "ppm", {"model": "/m/ppm2"})
    ctx2 = StageContext(cfg=ctx.cfg, run_dir=run, round=2, stage="eval")
    out = evaluate(ctx2)
    assert seen == {"methods": ["greedy", "best_of_n", "mcts_ppm"], "policy": "/m/sft2",
                    "ppm": "/m/ppm2", "n": 3}
    assert out["metrics"] == {"greedy_acc": 0.375, "mcts_ppm_acc": 0.625, "ppm_selected_acc": 0.5,
                              "majority_acc": 0.4375, "trajectories": 8}
    from rstar_jax.evaluation.methods import protocol

    assert out["details"]["protocol"] == protocol(ctx2.cfg)
    level3 = out["details"]["ppm_margins"]["best_of_n"]["3"]
    assert (level3["mixed"], level3["mean_margin"], level3["right_first"]) == (1, -0.3, 0.0)


def test_sft_and_ppm_stages_start_from_the_right_models(tmp_path, monkeypatch):
    import rstar_jax.training
    from rstar_jax.evolve.stages import ppm, sft

    calls = []

    def fake(kind):
        def train(cfg, data, out_dir, *, init_from=None):
            calls.append((kind, os.path.basename(data), init_from, cfg.model.tokenizer_dir))
            return {"final": os.path.join(out_dir, "final"), "steps": 3, "final_loss": 0.5,
                    "pair_accuracy": 0.7, "eval": {"pair_accuracy": 0.8} if kind == "ppm" else None}
        return train

    monkeypatch.setattr(rstar_jax.training, "train_policy", fake("lm"), raising=False)
    monkeypatch.setattr(rstar_jax.training, "train_ppm", fake("ppm"), raising=False)
    run = str(tmp_path)
    cfg = load_config(None, ["evolve.base_policy=/base"])
    _finished(run, 0, "world", {"tokenizer": "/tok"})
    for name in ("sft.jsonl", "ppm.jsonl"):
        (tmp_path / name).write_text('{"query": "q"}\n')
    _finished(run, 2, "extract", {"sft": str(tmp_path / "sft.jsonl"), "ppm": str(tmp_path / "ppm.jsonl")})
    out = sft(StageContext(cfg=cfg, run_dir=run, round=2, stage="sft"))
    assert out["outputs"]["model"] == os.path.join(run, "round_2", "sft", "train", "final")
    _finished(run, 2, "sft", {"model": "/m/sft2"})
    out = ppm(StageContext(cfg=cfg, run_dir=run, round=2, stage="ppm"))
    assert calls == [("lm", "sft.jsonl", "/base", "/tok"), ("ppm", "ppm.jsonl", "/m/sft2", "/tok")]
    assert out["metrics"]["ppm_pair_acc"] == 0.8  # held-out pairs win over the training window


def test_empty_round_data_keeps_models_or_says_why(tmp_path, monkeypatch):

    import rstar_jax.training
    from rstar_jax.evolve.stages import ppm, sft

    monkeypatch.setattr(rstar_jax.training, "train_policy", None, raising=False)
    run = str(tmp_path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    cfg = load_config(None, ["evolve.base_policy=/base"])
    _finished(run, 1, "extract", {"sft": str(empty), "ppm": str(empty)})
    _finished(run, 2, "extract", {"sft": str(empty), "ppm": str(empty)})
    out = sft(StageContext(cfg=cfg, run_dir=run, round=1, stage="sft"))
    assert out["outputs"]["model"] == "/base" and out["counts"] == {"examples": 0}
    assert "policy stays /base" in out["notes"][0]
    # Round 1 without pairs: the PPM's init (the base policy) stands in, untrained.
    out = ppm(StageContext(cfg=cfg, run_dir=run, round=1, stage="ppm"))
    assert out["outputs"]["model"] == "/base" and out["counts"] == {"examples": 0}
    assert "no preference pair" in out["notes"][0] and "untrained" in out["notes"][0]
    _finished(run, 1, "ppm", {"model": "/m/ppm1"})
    out = ppm(StageContext(cfg=cfg, run_dir=run, round=2, stage="ppm"))
    assert out["outputs"]["model"] == "/m/ppm1"


def test_cumulative_sft_data_pools_rounds_without_repeats(tmp_path, monkeypatch):
    import rstar_jax.training
    from rstar_jax.evolve.stages import sft

    seen = []

    def train(cfg, data, out_dir, *, init_from=None):
        with open(data) as f:
            seen.append((os.path.basename(data), [json.loads(x)["response"] for x in f]))
        return {"final": os.path.join(out_dir, "final"), "steps": 1, "final_loss": 0.1}

    monkeypatch.setattr(rstar_jax.training, "train_policy", train, raising=False)
    run = str(tmp_path)
    rounds = {1: ["a", "b"], 2: ["b", "c"], 3: ["d", "a", "d"]}
    for r, responses in rounds.items():
        path = tmp_path / f"sft{r}.jsonl"
        path.write_text("".join(json.dumps({"query": "q", "response": x, "id": "p"}) + "\n"
                                for x in responses))
        _finished(run, r, "extract", {"sft": str(path), "ppm": str(path)})
    for mode in ("round", "cumulative"):
        cfg = load_config(None, ["evolve.base_policy=/base", f"evolve.sft_data={mode}"])
        for r in (1, 3):
            sft(StageContext(cfg=cfg, run_dir=run, round=r, stage="sft"))
    assert seen == [("sft1.jsonl", ["a", "b"]), ("sft3.jsonl", ["d", "a", "d"]),
                    # round 1 has nothing earlier; round 3: rounds 1..3 in order, repeats dropped
                    ("sft1.jsonl", ["a", "b"]), ("data.jsonl", ["a", "b", "c", "d"])]
    with pytest.raises(ValueError, match="sft_data"):
        load_config(None, ["evolve.sft_data=all"])
