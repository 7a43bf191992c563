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


def _row(pid, name, method, question, gold, chosen=None, preds=(), scores=None, level=None):
    return {"id": pid, "benchmark": name, "method": method, "question": question, "gold": gold,
            "preds": list(preds), "scores": scores, "chosen": chosen,
            "meta": {} if level is None else {"level": level}}


def _fake_harness(seen, benchmark_problems):
    """`harness.evaluate` writing hand-made results: greedy right on the first
    problem of each set only, MCTS+PPM on all, best-of-3 with the PPM's top
    answer right and the majority wrong on every problem."""

    def evaluate(cfg, names, method, out_dir, problems=None):
        seen.append((method, list(names), cfg.model.checkpoint, cfg.ppm.checkpoint))
        summaries = []
        for name in names:
            probs = (problems or {}).get(name) or benchmark_problems[name]
            rows = []
            for i, p in enumerate(probs):
                gold = p.answer
                if method == "greedy":
                    rows.append(_row(p.id, name, method, p.question, gold,
                                     gold if i == 0 else "-1", [gold if i == 0 else "-1"]))
                elif method == "mcts_ppm":
                    rows.append(_row(p.id, name, method, p.question, gold, gold, [gold, "-1"],
                                     [0.5, 0.2], level=3))
                else:
                    rows.append(_row(p.id, name, method, p.question, gold, gold,
                                     [gold, "-1", "-1"], [0.9, 0.1, 0.2], level=3))
            os.makedirs(os.path.join(out_dir, name))
            with open(os.path.join(out_dir, name, "results.jsonl"), "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
            n = len(probs)
            summaries.append({"benchmark": name, "n": n, "accuracy": 100.0 / n if method == "greedy"
                              else 100.0, "best@k": 100.0, "maj@k": 0.0, "k": 3})
        return {"summaries": summaries}

    return evaluate


def test_eval_stage_covers_the_test_split_and_eval_benchmarks(tmp_path, monkeypatch):
    from rstar_jax.data.problems import Problem
    from rstar_jax.evolve.stages import evaluate

    seen = []
    bench = {"gsm8k": [Problem("g1", "1+1?", "2"), Problem("g2", "2+2?", "4")]}
    _fake_module(monkeypatch, "rstar_jax.evaluation.harness", evaluate=_fake_harness(seen, bench))
    run = str(tmp_path)
    ctx = _ctx(tmp_path, "problems", "eval.benchmarks=[gsm8k]", "eval.k=3")
    problems(ctx)
    _finished(run, 2, "problems", {"test": os.path.join(run, "round_1", "problems", "test.jsonl")})
    _finished(run, 2, "sft", {"model": "/m/sft2"})
    _finished(run, 2, "ppm", {"model": "/m/ppm2"})
    ctx2 = StageContext(cfg=ctx.cfg, run_dir=run, round=2, stage="eval")
    out = evaluate(ctx2)
    assert seen == [(m, ["test", "gsm8k"], "/m/sft2", "/m/ppm2")
                    for m in ("greedy", "best_of_n", "mcts_ppm")]
    # Flat metrics: the run's own test split (3 problems), as before.
    assert out["metrics"] == {"greedy_acc": pytest.approx(1 / 3), "mcts_ppm_acc": 1.0,
                              "ppm_selected_acc": 1.0, "majority_acc": 0.0, "trajectories": 3}
    sets = out["details"]["benchmarks"]
    assert list(sets) == ["test", "gsm8k"] and sets["gsm8k"]["n"] == 2
    assert sets["gsm8k"]["greedy_acc"] == 0.5
    # Per-problem correctness of every method, graded from the stored results.
    corr = json.load(open(out["outputs"]["correctness"]))["sets"]
    assert corr["gsm8k"]["ids"] == ["g1", "g2"] and corr["gsm8k"]["greedy"] == [1.0, 0.0]
    t = corr["test"]
    assert t["ids"] == ["arith-1000003-0", "arith-1000003-1", "arith-1000003-2"]
    assert (t["greedy"], t["mcts_ppm"]) == ([1.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    assert (t["ppm_selected"], t["majority"]) == ([1.0] * 3, [0.0] * 3)
    # Ceilings: one of the k trajectories / one of the tree's answers is right.
    assert (t["any_of_k"], t["mcts_any"]) == ([1.0] * 3, [1.0] * 3)
    assert len(set(t["digests"])) == 3
    from rstar_jax.evaluation.methods import protocol

    assert out["details"]["protocol"] == protocol(ctx2.cfg)
    level3 = out["details"]["ppm_margins"]["best_of_n"]["3"]
    assert (level3["mixed"], level3["mean_margin"], level3["right_first"]) == (3, 0.7, 1.0)


def test_without_a_test_split_the_benchmarks_are_the_evaluation(tmp_path, monkeypatch):
    from rstar_jax.data.problems import Problem
    from rstar_jax.evolve.stages import evaluate

    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"id": "p1", "question": "1+2?", "answer": "3"}) + "\n")
    cfg = load_config(None, [f"data.path={train}", "evolve.base_policy=/base"])
    ctx = StageContext(cfg=cfg, run_dir=str(tmp_path), round=1, stage="problems")
    os.makedirs(ctx.out_dir)
    assert problems(ctx)["counts"] == {"train": 1}  # data.source jsonl, no data.test_path
    seen = []
    bench = {"math500": [Problem("m1", "3+3?", "6")]}
    _fake_module(monkeypatch, "rstar_jax.evaluation.harness", evaluate=_fake_harness(seen, bench))
    _finished(str(tmp_path), 1, "sft", {"model": "/m/sft1"})
    _finished(str(tmp_path), 1, "ppm", {"model": "/m/ppm1"})
    out = evaluate(StageContext(cfg=cfg, run_dir=str(tmp_path), round=1, stage="eval"))
    assert [s[1] for s in seen] == [["math500"]] * 3 and list(out["details"]["benchmarks"]) == ["math500"]
    empty = load_config(None, [f"data.path={train}", "eval.benchmarks=[]", "evolve.base_policy=/b"])
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate(StageContext(cfg=empty, run_dir=str(tmp_path), round=0, stage="eval"))


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


def test_ppm_pair_accuracy_is_measured_on_held_out_problems(tmp_path, monkeypatch):
    """evolve.ppm_heldout=0.2 of 10 problems: 2 problems' pairs never reach
    training; the PPM scores them: one pair of each ranked right, one a tie."""
    import numpy as np

    import rstar_jax.inference
    import rstar_jax.training
    from rstar_jax.evolve.stages import ppm

    trained, scored = [], []

    def train_ppm(cfg, data, out_dir, *, init_from=None):
        with open(data) as f:
            trained.append(([json.loads(x)["id"] for x in f], cfg.train.eval_fraction))
        return {"final": os.path.join(out_dir, "final"), "steps": 2, "final_loss": 0.3,
                "pair_accuracy": 0.99}

    class Scorer:
        def score(self, texts):
            return np.array([1.0 if t.endswith("good") else 0.0 for t in texts], np.float32)

    def load_ppm_scorer(cfg):
        scored.append(cfg.ppm.checkpoint)
        return Scorer()

    monkeypatch.setattr(rstar_jax.training, "train_ppm", train_ppm, raising=False)
    monkeypatch.setattr(rstar_jax.inference, "load_ppm_scorer", load_ppm_scorer)
    pairs = tmp_path / "ppm.jsonl"
    pairs.write_text("".join(
        json.dumps({"prompt": f"Q{i} ", "pos": pos, "neg": neg, "id": f"p{i}"}) + "\n"
        for i in range(10) for pos, neg in (("good", "bad"), ("meh", "meh"))))
    run = str(tmp_path)
    _finished(run, 2, "extract", {"ppm": str(pairs)})
    _finished(run, 2, "sft", {"model": "/m/sft2"})
    cfg = load_config(None, ["evolve.base_policy=/base", "evolve.ppm_heldout=0.2",
                             "train.eval_fraction=0.1"])
    ctx = StageContext(cfg=cfg, run_dir=run, round=2, stage="ppm")
    out = ppm(ctx)
    ids, fraction = trained[0]
    held = sorted({json.loads(x)["id"] for x in open(ctx.path("pairs", "heldout.jsonl"))})
    assert len(ids) == 16 and len(held) == 2 and not set(held) & set(ids)
    assert fraction == 0.0  # held-out problems replace the loop's held-out records
    assert scored == [os.path.join(ctx.out_dir, "train", "final")]
    assert out["metrics"]["ppm_pair_acc"] == 0.5  # not the training window's 0.99
    assert out["details"]["ppm_pairs"] == {"heldout_share": 0.2, "measured_on": "held_out_problems",
                                           "problems": 2, "pairs": 4}
    ppm(ctx)  # a rerun (resume) holds out the same problems
    assert trained[1][0] == ids
    # ppm_heldout 0: every pair trains; the figure is the training window's, and says so.
    cfg0 = load_config(None, ["evolve.base_policy=/base", "evolve.ppm_heldout=0"])
    out0 = ppm(StageContext(cfg=cfg0, run_dir=run, round=2, stage="ppm"))
    assert len(trained[2][0]) == 20 and out0["metrics"]["ppm_pair_acc"] == 0.99
    assert out0["details"]["ppm_pairs"]["measured_on"] == "training_window"
    with pytest.raises(ValueError, match="ppm_heldout"):
        load_config(None, ["evolve.ppm_heldout=1.0"])


def test_heldout_accuracy_scores_pairs_with_the_real_scorer(tmp_path):
    """`_heldout_accuracy` through `load_ppm_scorer` on a fresh tiny PPM
    (the world's tokenizer): the share it returns is the share of pairs
    whose chosen text the same scorer puts above the rejected one."""
    from rstar_jax.evolve.stages import _heldout_accuracy
    from rstar_jax.inference import load_ppm_scorer

    ctx = _ctx(tmp_path, "world")
    world(ctx)
    cfg = load_config(None, ["model.vocab_size=320", f"model.tokenizer_dir={ctx.path('tokenizer')}",
                             "engine.max_seq_len=128", "engine.score_buckets=[64,128]"])
    recs = [{"prompt": f"Q{i}: 3 + {i} = ?\n", "pos": f"x = {3 + i}", "neg": f"x = {i * 7 % 5}",
             "id": f"p{i}"} for i in range(6)]
    held = tmp_path / "held.jsonl"
    held.write_text("".join(json.dumps(r) + "\n" for r in recs))
    acc, pairs = _heldout_accuracy(cfg, str(held))
    scores = load_ppm_scorer(cfg).score([r["prompt"] + r[s] for r in recs for s in ("pos", "neg")])
    assert pairs == 6
    assert acc == sum(float(scores[2 * i]) > float(scores[2 * i + 1]) for i in range(6)) / 6
