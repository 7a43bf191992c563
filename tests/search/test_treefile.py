"""Tree files: atomic records, resume after SIGKILL, torn lines, shards, merge."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

from search.search_helpers import add_problems, make_cfg

from rstar_jax.search import tree as T
from rstar_jax.search import treefile
from rstar_jax.search.run import search_to_dir
from rstar_jax.testing.mock import MOCK_HOOKS, FakeExecutor, MockEngine, MockScorer

REPO = pathlib.Path(__file__).resolve().parents[2]


def _search(out, problems, cfg=None, **kw):
    return search_to_dir(cfg or make_cfg(candidates=3, rollouts=4, trees_in_flight=2), problems,
                         str(out), MockEngine(steps=2, seeded=True), FakeExecutor(), kw.get("scorer"),
                         MOCK_HOOKS, process_index=kw.get("pi", 0), process_count=kw.get("pc", 1))


def _lines(path):
    return pathlib.Path(path).read_bytes().decode().splitlines()


def test_record_holds_problem_gold_and_every_node(tmp_path):
    s = _search(tmp_path, add_problems(2))
    assert (s["searched"], s["skipped"], s["problems"]) == (2, 0, 2)
    recs = treefile.load_records(str(tmp_path))
    assert [r["id"] for r in recs] == ["p0", "p1"]
    r = recs[0]
    assert r["question"] == "What is 3 + 4?" and r["answer"] == "7" and r["mode"] == "mcts"
    node = r["trees"][0]["nodes"][1]
    for key in ("tag", "text", "code", "program", "observation", "final_answer", "N", "Q", "ppm_value",
                "terminal_reason"):
        assert key in node
    tree = treefile.record_trees(r)[0]
    assert r["solved"] == T.is_solved(tree) is True
    assert "prediction" not in r  # gold-rewarded MCTS makes training data
    assert "time" not in json.dumps(r)


def test_rerun_skips_finished_and_appends_rest(tmp_path):
    probs = add_problems(4)
    _search(tmp_path, probs[:2])
    first = _lines(tmp_path / "trees.0.jsonl")
    s = _search(tmp_path, probs)
    assert (s["skipped"], s["searched"]) == (2, 2)
    lines = _lines(tmp_path / "trees.0.jsonl")
    assert lines[:2] == first and len(lines) == 4
    ref = tmp_path / "ref"
    _search(ref, probs)
    assert sorted(lines) == sorted(_lines(ref / "trees.0.jsonl"))


def test_torn_last_line_is_cut_and_redone(tmp_path):
    probs = add_problems(3)
    _search(tmp_path, probs)
    path = tmp_path / "trees.0.jsonl"
    good = _lines(path)
    with open(path, "ab") as f:  # a crash in the middle of a fourth record
        f.write(good[0].encode()[:50])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - len(good[2]) - 1 - 50] + good[2].encode()[:70])
    assert len(list(treefile.read_records(str(path)))) == 2  # torn line ignored
    s = _search(tmp_path, probs)
    assert s["skipped"] == 2 and s["searched"] == 1
    assert sorted(_lines(path)) == sorted(good)


def test_sigkill_midway_then_rerun_gives_exact_records(tmp_path):
    count = 16
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    cmd = [sys.executable, str(REPO / "tests" / "search" / "killrun.py"), str(tmp_path / "k"),
           str(count), "0.02"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    path = tmp_path / "k" / "trees.0.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= 3:
            break
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode())
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = path.read_bytes().count(b"\n")
    assert 3 <= partial < count, partial  # killed mid-way
    subprocess.run(cmd[:-1] + ["0"], env=env, check=True, capture_output=True, timeout=120)
    _search(tmp_path / "ref", add_problems(count))
    got = _lines(path)
    ref = _lines(tmp_path / "ref" / "trees.0.jsonl")
    ids = [json.loads(x)["id"] for x in got]
    assert len(ids) == len(set(ids)) == count  # no duplicates, none missing
    assert sorted(got) == sorted(ref)


def test_shards_and_merge(tmp_path):
    probs = add_problems(5)
    for p in range(2):
        s = _search(tmp_path, probs, pi=p, pc=2)
        assert s["problems"] == (3 if p == 0 else 2)
    assert [r["id"] for r in treefile.read_records(str(tmp_path / "trees.1.jsonl"))] == ["p1", "p3"]
    counts = treefile.merge_tree_files(str(tmp_path))
    assert counts == {"shards": 2, "records": 5, "duplicates": 0}
    merged = treefile.load_records(str(tmp_path))  # the merged file wins
    assert [r["id"] for r in merged] == ["p0", "p1", "p2", "p3", "p4"]
    single = tmp_path / "single"
    _search(single, probs)
    assert sorted(_lines(tmp_path / "trees.jsonl")) == sorted(_lines(single / "trees.0.jsonl"))


def test_inference_record_prediction(tmp_path):
    from rstar_jax.data.problems import Problem

    cfg = make_cfg(terminal_value="ppm", candidates=2, rollouts=4)
    prob = [Problem(id="q", question="What is 3 + 4?", answer="7")]
    search_to_dir(cfg, prob, str(tmp_path), MockEngine(steps=2), FakeExecutor(), MockScorer(),
                  MOCK_HOOKS, process_index=0, process_count=1)
    (r,) = treefile.load_records(str(tmp_path))
    # The mock PPM prefers even answers: boxed{8} (0.9) beats boxed{7} (-0.9).
    assert r["prediction"] == "8" and r["prediction_correct"] is False
    assert r["solved"] is True  # some trajectory was right


def test_record_answers_for_selection(tmp_path):
    from rstar_jax.data.problems import Problem

    cfg = make_cfg(terminal_value="ppm", candidates=2, rollouts=4)
    search_to_dir(cfg, [Problem(id="q", question="What is 3 + 4?")], str(tmp_path),
                  MockEngine(steps=2), FakeExecutor(), MockScorer(), MOCK_HOOKS,
                  process_index=0, process_count=1)
    (r,) = treefile.load_records(str(tmp_path))
    got = [(a, round(s, 4)) for a, s in treefile.record_answers(r)]
    assert got == [("7", -0.9), ("8", 0.9)]
    assert r["answer"] is None and r["solved"] is False


def test_problem_id_order_is_shared_by_merge_and_extraction():
    ids = ["p10", "10", "arith-0-10", "-1", "p2", "2", "arith-0-2"]
    assert sorted(ids, key=treefile.id_order_key) == ["-1", "2", "10", "arith-0-2", "arith-0-10",
                                                      "p2", "p10"]
