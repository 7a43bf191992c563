"""A reduced embedded run through the real stages (world, base pretraining,
search, extraction, SFT, PPM, evaluation): every stage finishes with its
manifest and the report has its fields. Minutes on a CPU: marked slow."""

import json
import subprocess
import sys

import pytest

from testutil import REPO

REDUCED = [
    # Pretrains a smaller base on a smaller world (the shipped base is the
    # full world's): the pretraining stage stays covered.
    "evolve.base_stages=[world,pretrain,eval]", "evolve.base_policy=null",
    "model.hidden_size=64", "model.intermediate_size=192", "model.head_dim=16",
    "data.arith_levels=[1,2]", "data.arith_count=12", "data.arith_test_count=8",
    "data.arith_corpus_count=600", "evolve.pretrain.max_steps=200", "evolve.pretrain.batch_size=16",
    "train.sft.max_steps=8", "train.ppm.max_steps=8", "mcts.rollouts=4", "mcts.candidates=3",
    "mcts.unsolved_rollouts=0", "mcts.unsolved_seeds=0", "mcts.second_tree_for_unsolved=false",
    "eval.k=2", "inference_eval.rollouts=2", "logging.progress=false",
]
ROUND_KEYS = {"round", "solved_share", "greedy_acc", "mcts_ppm_acc", "ppm_pair_acc", "majority_acc",
              "ppm_selected_acc", "trajectories"}
DETAIL_KEYS = {"protocol", "ppm_margins", "ppm_pairs", "benchmarks", "comparisons"}
COMPARISONS = {"greedy_vs_base", "mcts_ppm_vs_greedy", "ppm_selected_vs_majority",
               "any_of_k_vs_majority", "mcts_any_vs_mcts_ppm"}


@pytest.mark.slow
def test_reduced_embedded_run(tmp_path):
    run = tmp_path / "demo"
    cmd = [sys.executable, "-m", "rstar_jax", "evolve", "--config", "configs/demo/evolve.yaml",
           "--out", str(run), *REDUCED]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    stages = {0: ("world", "pretrain", "eval")}
    stages.update({r: ("problems", "search", "extract", "sft", "ppm", "eval") for r in (1, 2, 3, 4)})
    for rnd, names in stages.items():
        for name in names:
            m = json.loads((run / f"round_{rnd}" / name / "manifest.json").read_text())
            assert m["stage"] == name and m["round"] == rnd and m["timings"]["wall_s"] >= 0
    report = json.loads((run / "report.json").read_text())
    assert set(report) == {"run_name", "base", "rounds", "sets", "intervals", "protocols", "wall_s",
                           "notes", "runtime"}
    # The demo evaluates its own test split only (eval.benchmarks: []).
    assert report["sets"] == ["test"] and report["base"]["benchmarks"]["test"]["n"] == 8
    assert report["run_name"] == "demo"
    # MCTS+PPM runs in round 4 only (the demo's eval.round_methods), and its
    # protocol (inference_eval) is stated in the report.
    assert [g["rounds"] for g in report["protocols"]] == [[4]]
    assert report["protocols"][0]["rollouts"] == 2 and report["protocols"][0]["prompt"] == "zero-shot"
    assert 0.0 <= report["base"]["greedy_acc"] <= 1.0
    assert [r["round"] for r in report["rounds"]] == [1, 2, 3, 4]
    for r in report["rounds"]:
        assert set(r) == ROUND_KEYS | DETAIL_KEYS
        if r["round"] < 4:  # greedy only: the other methods' columns and comparisons are absent
            assert r["ppm_margins"] == {} and r["protocol"] is None
            assert r["mcts_ppm_acc"] is r["majority_acc"] is r["ppm_selected_acc"] is None
            assert 0.0 <= r["greedy_acc"] <= 1.0
            assert set(r["comparisons"]["test"]) == {"greedy_vs_base"}
        else:
            assert {"1", "2", "all"} <= set(r["ppm_margins"]["best_of_n"])
            assert r["ppm_margins"]["best_of_n"]["all"]["problems"] == 8
            assert r["trajectories"] == 2
            assert set(r["comparisons"]["test"]) == COMPARISONS
            # The answer a vote or the PPM picks is one of the candidates: a
            # problem it gets right has a right candidate, so no ceiling is below it.
            for key in ("any_of_k_vs_majority", "mcts_any_vs_mcts_ppm"):
                assert r["comparisons"]["test"][key]["diff"] >= 0.0
        for key in ROUND_KEYS - {"round", "trajectories"}:
            if r[key] is None and key == "ppm_pair_acc":
                # Only a round whose search found no pair (said in the notes) has no PPM score.
                assert any(n.startswith(f"round {r['round']}: search produced no preference pair")
                           for n in report["notes"]), report["notes"]
                continue
            if r[key] is None and r["round"] < 4:
                continue
            assert 0.0 <= r[key] <= 1.0, (r["round"], key)
        # Paired comparisons on the same 8 problems (the base's world test = the rounds' test).
        for c in r["comparisons"]["test"].values():
            assert c["n"] == 8 and c["ci"][0] <= c["diff"] <= c["ci"][1]
        if r["ppm_pair_acc"] is not None:
            # Pairs of >= 2 problems: 10% of them (at least one) held out of PPM training.
            pairs = (run / f"round_{r['round']}" / "extract" / "ppm.jsonl").read_text().splitlines()
            n_ids = len({json.loads(line)["id"] for line in pairs if line.strip()})
            if n_ids >= 2:
                assert r["ppm_pairs"]["measured_on"] == "held_out_problems"
                assert r["ppm_pairs"]["problems"] == max(1, round(0.1 * n_ids))
            else:  # one problem: the loop's held-out records (train.eval_fraction), if any
                assert r["ppm_pairs"]["measured_on"] in ("held_out_records", "training_window")
    assert "mcts+ppm" in out.stdout and (run / "accuracy.png").stat().st_size > 0
    assert "## Paired differences" in (run / "report.md").read_text()
    # evolve.compile_cache: the stages' compiled programs are on disk for later stages.
    assert len(list((run / ".jax_cache").iterdir())) > 10
    # A rerun finds every stage finished and reproduces the report.
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((run / "report.json").read_text())["rounds"] == report["rounds"]


def _lines(path):
    try:
        with open(path, encoding="utf-8") as f:
            return sum(1 for line in f if line.strip())
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_reduced_run_killed_mid_search_resumes_to_the_same_report(tmp_path):
    """SIGKILL in the middle of round 2's search (tree file partly written),
    then the same command: the report equals an uninterrupted run's."""
    import os
    import signal
    import time

    def cmd(run):
        return [sys.executable, "-m", "rstar_jax", "evolve", "--config", "configs/demo/evolve.yaml",
                "--out", str(run), *REDUCED]

    clean, killed = tmp_path / "clean", tmp_path / "killed"
    trees = killed / "round_2" / "search" / "trees" / "trees.0.jsonl"
    proc = subprocess.Popen(cmd(killed), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 1500
    while _lines(trees) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before round 2's search had written 2 problems"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = _lines(trees)
    assert 2 <= partial < 12, partial  # killed mid-search: some problems done, not all
    resumed = subprocess.run(cmd(killed), cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ref = subprocess.run(cmd(clean), cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert ref.returncode == 0, ref.stderr[-3000:]
    a = json.loads((clean / "report.json").read_text())
    b = json.loads((killed / "report.json").read_text())
    assert b["base"] == a["base"] and b["rounds"] == a["rounds"]
    # The resumed tree file holds every problem exactly once, as the clean one does.
    ids = [json.loads(line)["id"] for line in trees.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 12
    clean_trees = (clean / "round_2" / "search" / "trees" / "trees.0.jsonl").read_text().splitlines()
    assert sorted(trees.read_text().splitlines()) == sorted(clean_trees)
    # Same trees written in another order: the training data is the same, in the same order.
    for name in ("sft.jsonl", "ppm.jsonl"):
        extracted = [run / "round_2" / "extract" / name for run in (clean, killed)]
        assert extracted[0].read_text() == extracted[1].read_text(), name
