"""search_to_dir's answer selection (mcts.answer_selection) and its
per-process sharding, with hand-built trees and the mock engine."""

import json

import pytest
from search.search_helpers import add_problems, make_cfg

import rstar_jax.inference
from rstar_jax.cli import main
from rstar_jax.config.loader import load_config
from rstar_jax.search import tree as T
from rstar_jax.search import treefile
from rstar_jax.search.run import choose_answer, search_to_dir
from rstar_jax.testing.mock import MOCK_HOOKS, FakeExecutor, MockEngine, MockScorer


def answer_tree(*answers):
    """A root with one final-answer child per (answer, ppm score)."""
    tree = T.Tree()
    for ans, score in answers:
        ci = T.add_child(tree, 0, f"\\boxed{{{ans}}}")
        node = tree.nodes[ci]
        node.terminal, node.terminal_reason = True, T.FINAL_ANSWER
        node.final_answer, node.ppm_value = ans, score
    return tree


def eq(a, b):  # "1/2" and "0.5" are one answer, as the grader would say
    norm = {"1/2": "0.5"}
    return norm.get(a, a) == norm.get(b, b)


# Candidates in creation order: tree 0 then tree 1.
TREES = [answer_tree(("3", 0.9), ("1/2", 0.2), (None, 0.95)),
         answer_tree(("0.5", 0.3), ("3", -0.8), ("0.5", 0.1), ("4", 0.5))]


@pytest.mark.parametrize("method,k,want", [
    ("top_score", 4, (0, 1, "3")),        # 0.9 is the best score with an answer (None is skipped)
    ("majority", 4, (0, 2, "1/2")),       # {1/2, 0.5, 0.5} x3 beats {3} x2; named by its first
    ("weighted", 4, (0, 2, "1/2")),       # 0.2+0.3+0.1 = 0.6 beats 0.9-0.8 = 0.1 and 0.5
    ("top_k_majority", 2, (0, 1, "3")),   # top 2 by score: 3 (0.9), 4 (0.5): tie, 3 scores higher
    ("top_k_majority", 4, (1, 1, "0.5")),  # top 4: 3, 4, 0.5 (0.3), 1/2 (0.2): {0.5, 1/2} x2
])
def test_choose_answer_pools_all_trees(method, k, want):
    ti, idx, ans = choose_answer(TREES, method, k, equiv=eq)
    assert (ti, idx, ans) == want
    assert TREES[ti].nodes[idx].final_answer == ans


def test_choose_answer_without_answers_or_scores():
    assert choose_answer([answer_tree((None, 0.3)), T.Tree()], "majority", equiv=eq) is None
    # Unscored answers rank last for top_score but still vote.
    trees = [answer_tree(("5", None), ("6", -0.9), ("5", None))]
    assert choose_answer(trees, "top_score", equiv=eq)[2] == "6"
    assert choose_answer(trees, "majority", equiv=eq)[2] == "5"


def test_config_offers_the_selection_methods(repo_root):
    cfg = load_config(str(repo_root / "configs/models/tiny.yaml"),
                      ["mcts.answer_selection=top_k_majority", "mcts.answer_top_k=3"])
    assert (cfg.mcts.answer_selection, cfg.mcts.answer_top_k) == ("top_k_majority", 3)
    with pytest.raises(Exception, match="answer_selection"):
        load_config(str(repo_root / "configs/models/tiny.yaml"), ["mcts.answer_selection=best"])


@pytest.mark.parametrize("method,want,correct", [
    ("top_score", "8", False), ("weighted", "8", False), ("majority", "7", True),
])
def test_search_records_the_configured_selection(tmp_path, method, want, correct):
    # The mock finds 7 (PPM -0.9), 8 (+0.9) and 9 (-0.9) once each: the
    # scores pick 8, the vote's tie goes to the first answer found, 7.
    cfg = make_cfg(terminal_value="ppm", candidates=3, rollouts=4, answer_selection=method)
    search_to_dir(cfg, add_problems(1), str(tmp_path), MockEngine(steps=2), FakeExecutor(),
                  MockScorer(), MOCK_HOOKS, process_index=0, process_count=1)
    (rec,) = treefile.load_records(str(tmp_path))
    assert [(a, round(s, 2)) for a, s in treefile.record_answers(rec)] == [
        ("7", -0.9), ("8", 0.9), ("9", -0.9)]
    assert rec["answer_selection"] == method and rec["answer_candidates"] == 3
    assert (rec["prediction"], rec["prediction_correct"], rec["prediction_tree"]) == (want, correct, 0)
    node = next(n for n in rec["trees"][0]["nodes"] if n["tag"] == rec["prediction_tag"])
    assert node["final_answer"] == want


def test_gold_mcts_records_no_prediction(tmp_path):
    search_to_dir(make_cfg(), add_problems(1), str(tmp_path), MockEngine(steps=1), FakeExecutor(),
                  None, MOCK_HOOKS, process_index=0, process_count=1)
    (rec,) = treefile.load_records(str(tmp_path))
    assert "prediction" not in rec and "answer_selection" not in rec


@pytest.mark.parametrize("count", [1, 2, 3])
def test_processes_split_the_problems_from_jax_process_index(tmp_path, monkeypatch, count):
    import jax

    probs = add_problems(7)
    shards = []
    for p in range(count):  # each "process" sees its own fake index
        monkeypatch.setattr(jax, "process_index", lambda p=p: p)
        monkeypatch.setattr(jax, "process_count", lambda: count)
        s = search_to_dir(make_cfg(rollouts=2), probs, str(tmp_path), MockEngine(steps=1),
                          FakeExecutor(), None, MOCK_HOOKS)
        assert s["shard"] == [p, count]
        shards.append([r["id"] for r in treefile.read_records(str(tmp_path / f"trees.{p}.jsonl"))])
    # Round robin: disjoint, complete, sizes differ by at most one.
    assert sorted(i for s in shards for i in s) == sorted(p.id for p in probs)
    assert shards[0] == [f"p{i}" for i in range(0, 7, count)]
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert treefile.merge_tree_files(str(tmp_path))["records"] == 7


def test_search_command_initialises_distributed_first_and_uses_local_devices(
        tmp_path, monkeypatch, capsys, repo_root):
    import jax

    import rstar_jax.models.mesh as mesh_mod
    from rstar_jax.execution import pool

    calls = []
    monkeypatch.setattr(mesh_mod, "maybe_initialize_distributed",
                        lambda d: calls.append(("init", d.enabled)) or True)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda: 1)

    def engine(cfg, **kw):
        calls.append(("engine", kw["mesh"].devices.size))
        return MockEngine(steps=1)

    monkeypatch.setattr(rstar_jax.inference, "load_policy_engine", engine)
    monkeypatch.setattr(pool, "ExecutorPool", lambda cfg: FakeExecutor())
    monkeypatch.setattr("rstar_jax.search.expansion.default_hooks", lambda: MOCK_HOOKS)
    probs = tmp_path / "p.jsonl"
    probs.write_text("\n".join(json.dumps({"id": p.id, "question": p.question, "answer": p.answer})
                               for p in add_problems(3)))
    rc = main(["search", "--config", str(repo_root / "configs/models/tiny.yaml"), "--problems",
               str(probs), "--out", str(tmp_path / "o"), "mcts.rollouts=2",
               "logging.progress=false"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # Distributed set up before the engine; the engine's mesh holds this
    # process's devices (8 fake CPU devices here), not a cross-host mesh.
    assert calls == [("init", "auto"), ("engine", len(jax.local_devices()))]
    assert summary["shard"] == [1, 2] and summary["problems"] == 1
    assert [r["id"] for r in treefile.read_records(str(tmp_path / "o/trees.1.jsonl"))] == ["p1"]


@pytest.mark.parametrize("sizes,local", [
    ((16, -1, 1), (1, -1, 1)),  # configs/mesh/tpu-v5e-256.yaml: data spans the hosts
    ((1, -1, 1), (1, -1, 1)),   # configs/mesh/tpu-v4-32.yaml: unchanged
    ((2, 2, 2), (-1, 2, 2)),    # all fixed: data takes the rest of this host
    ((-1, 1, 4), (-1, 1, 4)),
])
def test_local_mesh_config_frees_the_data_axis(sizes, local):
    import dataclasses

    from rstar_jax.config.schema import MeshConfig
    from rstar_jax.models.mesh import mesh_shape
    from rstar_jax.search.commands import local_mesh_config

    cfg = dataclasses.replace(MeshConfig(), data=sizes[0], fsdp=sizes[1], tensor=sizes[2])
    got = local_mesh_config(cfg)
    assert (got.data, got.fsdp, got.tensor) == local
    assert got.inference_rules == cfg.inference_rules
    assert mesh_shape(got, 8)[2] == sizes[2]  # tensor parallelism is kept
