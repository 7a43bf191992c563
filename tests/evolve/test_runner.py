"""The evolve runner with fake stages: plan, skipping, manifests, --only/--from, resume, report."""

import json
import os
import signal
import subprocess
import sys

import pytest

from rstar_jax.config import ConfigError
from rstar_jax.evolve.context import MissingInput
from rstar_jax.evolve.plan import build_plan, select
from rstar_jax.evolve.runner import run_evolve
from testutil import REPO

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import evolve_fakes  # noqa: E402

FAKES = ("world", "pretrain", "search", "extract", "sft", "ppm", "eval")
STAGES = ("problems", "search", "extract", "sft", "ppm", "eval")


@pytest.fixture
def configs(tmp_path):
    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    fns = "\n".join(f"    {s}: evolve_fakes:{'evaluate' if s == 'eval' else s}" for s in FAKES)
    (cfg_dir / "base.yaml").write_text(
        "# fake base\nrun_name: fake-run\ndata:\n  source: arith\n  arith_count: 8\n  arith_test_count: 4\n"
        f"evolve:\n  stage_functions:\n{fns}\n")
    (cfg_dir / "evolve.yaml").write_text(
        "# fake evolve\nbase_config: base.yaml\nevolve:\n  round: 0\n"
        "  base_stages: [world, pretrain, eval]\n"
        "  rounds: [r1.yaml, r2.yaml, r3.yaml, r4.yaml]\n")
    (cfg_dir / "r1.yaml").write_text("# r1\nbase_config: base.yaml\nevolve:\n  round: 1\n")
    (cfg_dir / "r2.yaml").write_text("# r2\nbase_config: r1.yaml\nevolve:\n  round: 2\n")
    (cfg_dir / "r3.yaml").write_text(
        "# r3\nbase_config: r2.yaml\nevolve:\n  round: 3\nmcts:\n  ppm_init_value: true\n")
    (cfg_dir / "r4.yaml").write_text("# r4\nbase_config: r3.yaml\nevolve:\n  round: 4\n")
    return str(cfg_dir / "evolve.yaml")


def _calls(run_dir):
    path = os.path.join(run_dir, "calls.log")
    return open(path).read().split() if os.path.exists(path) else []


def _manifest(run_dir, rnd, stage):
    with open(os.path.join(run_dir, f"round_{rnd}", stage, "manifest.json")) as f:
        return json.load(f)


def _default_protocol():
    from rstar_jax.config.schema import Config
    from rstar_jax.evaluation.methods import protocol

    return protocol(Config())


EXPECTED_ROUNDS = [
    {"round": r, "solved_share": r / 4, "greedy_acc": 0.25 + 0.1 * r, "mcts_ppm_acc": 0.35 + 0.1 * r,
     "ppm_pair_acc": 0.6 + 0.05 * r, "majority_acc": 0.3 + 0.1 * r,
     "ppm_selected_acc": 0.32 + 0.1 * r, "trajectories": 8,
     "protocol": _default_protocol(), "ppm_margins": evolve_fakes.fake_margins(r)}
    for r in (1, 2, 3, 4)
]


NEW_KEYS = {"ppm_pairs", "benchmarks", "comparisons"}  # checked in test_report_pairs_...


def _same_rounds(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.keys() == e.keys() | NEW_KEYS
        for k in e:
            if isinstance(e[k], dict):
                assert g[k] == e[k], (g["round"], k)
            else:
                assert g[k] == pytest.approx(e[k]), (g["round"], k)


def test_plan_and_selection(configs):
    plan = build_plan(configs)
    ids = [s.id for s in plan]
    assert ids[:3] == ["round0.world", "round0.pretrain", "round0.eval"]
    assert ids[3:9] == [f"round1.{s}" for s in STAGES] and len(ids) == 3 + 4 * 6
    assert plan[-1].cfg.mcts.ppm_init_value and not plan[4].cfg.mcts.ppm_init_value
    # Overrides reach every round.
    assert all(s.cfg.data.arith_count == 5 for s in build_plan(configs, ["data.arith_count=5"]))
    assert [s.id for s in select(plan, only="round3.search")] == ["round3.search"]
    assert [s.id for s in select(plan, only="round2.sft,round4")] == (
        ["round2.sft"] + [f"round4.{s}" for s in STAGES])
    assert [s.id for s in select(plan, start="round4.ppm")] == ["round4.ppm", "round4.eval"]
    with pytest.raises(ConfigError, match="no such stage"):
        select(plan, only="round5.search")
    with pytest.raises(ConfigError, match="expected roundN"):
        select(plan, start="search")


def test_full_run_manifests_report_and_skip(configs, tmp_path, capsys):
    run = str(tmp_path / "run")
    report = run_evolve(configs, run)
    assert report["base"] == {"greedy_acc": 0.25,
                              "benchmarks": {"test": {"n": 10, "greedy_acc": 0.0}}}
    _same_rounds(report["rounds"], EXPECTED_ROUNDS)
    on_disk = json.loads(open(os.path.join(run, "report.json")).read())
    assert on_disk["base"] == report["base"] and on_disk["wall_s"] >= 0
    _same_rounds(on_disk["rounds"], EXPECTED_ROUNDS)
    for name in ("report.md", "accuracy.png", "solved.png", "selection.png"):
        assert os.path.getsize(os.path.join(run, name)) > 0
    assert "| 4 | 100.0 | 65.0 | 75.0 | 80.0 | 70.0 | 72.0 | 8 |" in open(os.path.join(run, "report.md")).read()
    table = capsys.readouterr().out
    assert "mcts+ppm" in table and "65.0" in table

    m = _manifest(run, 2, "search")
    assert m["stage"] == "search" and m["round"] == 2 and m["config"]["evolve"]["round"] == 2
    assert m["counts"] == {"problems": 8, "solved": 4} and m["outputs"] == {"trees": "trees.jsonl"}
    assert set(m["timings"]) == {"started", "finished", "wall_s"} and "git_revision" in m
    assert m["config_file"].endswith("r2.yaml")

    # Model lineage (spec sections 1 and 6).
    base = os.path.join(run, "round_0", "pretrain", "model")
    assert _manifest(run, 1, "search")["inputs"]["search_policy"] == base
    assert _manifest(run, 2, "search")["inputs"]["search_policy"] == os.path.join(run, "round_1", "sft", "model")
    assert _manifest(run, 2, "search")["inputs"]["search_ppm"] is None
    assert _manifest(run, 3, "search")["inputs"]["search_ppm"] == os.path.join(run, "round_2", "ppm", "model")
    for r in (1, 2, 3, 4):
        assert _manifest(run, r, "sft")["inputs"]["sft_init"] == base
    assert _manifest(run, 1, "ppm")["inputs"]["ppm_init"] == base
    assert _manifest(run, 3, "ppm")["inputs"]["ppm_init"] == os.path.join(run, "round_3", "sft", "model")

    # A rerun does nothing but rebuild the report.
    before = _calls(run)
    mtime = os.stat(os.path.join(run, "round_3", "sft", "manifest.json")).st_mtime_ns
    again = run_evolve(configs, run)
    assert _calls(run) == before
    assert os.stat(os.path.join(run, "round_3", "sft", "manifest.json")).st_mtime_ns == mtime
    _same_rounds(again["rounds"], EXPECTED_ROUNDS)


def test_rerun_under_an_edited_config_is_refused_not_mixed(configs, tmp_path, caplog):
    """A finished stage made under another config is another run's result:
    rerunning with a changed key stops, naming the stage, the key and both
    values, before anything runs; a logging-only change resumes."""
    from rstar_jax.evolve.runner import changed_keys

    run = str(tmp_path / "run")
    run_evolve(configs, run)
    before = _calls(run)
    # Overrides apply to every round: the first finished stage refuses.
    with pytest.raises(ConfigError, match=r"round0\.world finished under another config "
                                          r"\(mcts\.rollouts: \d+ -> 3\)") as err:
        run_evolve(configs, run, ["mcts.rollouts=3"])
    assert os.path.join(run, "round_0", "world") in str(err.value)
    assert _calls(run) == before  # nothing ran
    with caplog.at_level("INFO", logger="rstar_jax.evolve.runner"):
        report = run_evolve(configs, run, ["logging.progress_every_s=7", "logging.level=DEBUG"])
    _same_rounds(report["rounds"], EXPECTED_ROUNDS)
    assert _calls(run) == before and "differs only in logging/caching keys" in caplog.text
    assert changed_keys({"a": {"b": 1, "c": [1]}, "logging": {"level": "INFO"}},
                        {"a": {"b": 2, "c": [1]}, "logging": {"level": "DEBUG"}}) == ["a.b"]


def test_report_states_the_protocol_and_where_the_ppm_fails(configs, tmp_path, capsys):
    run = str(tmp_path / "run")
    report = run_evolve(configs, run)
    assert report["protocols"] == [{"rounds": [1, 2, 3, 4], **_default_protocol()}]
    md = open(os.path.join(run, "report.md")).read()
    assert md.startswith("# Self-evolution report: fake-run\n") and report["run_name"] == "fake-run"
    assert ("Evaluation protocol (rounds 1-4): MCTS+PPM with 64 independent runs of 12 rollouts "
            "(each run's best trajectory by PPM score is one candidate) x 32 candidates per "
            "step, PPM values for new leaves on") in md
    assert "zero-shot prompt" in md and "NOT evaluated the same way" not in md
    assert "Evaluation protocol (rounds 1-4)" in capsys.readouterr().out
    assert "## Where the PPM fails" in md
    assert "| 3 | sampled | 1 | 4 | 2 | +0.100 | +0.150 | 50.0 | 1 | 1 |" in md
    assert "| 1 | MCTS | all | 4 | 2 | -0.100 | +0.050 | 50.0 | 1 | 1 |" in md
    on_disk = json.loads(open(os.path.join(run, "report.json")).read())
    assert on_disk["rounds"][2]["ppm_margins"] == evolve_fakes.fake_margins(3)


def test_report_pairs_each_comparison_with_its_interval(configs, tmp_path, capsys):
    """evolve_fakes.fake_correctness: round 4's greedy is right on 8 of 10
    problems the base missed (a difference on most problems: its interval
    excludes zero), MCTS+PPM on one more than greedy (one problem: it does
    not), PPM-selected equals majority everywhere (the interval is [0, 0])."""
    run = str(tmp_path / "run")
    report = run_evolve(configs, run)
    c = report["rounds"][3]["comparisons"]["test"]
    assert set(c) == {"greedy_vs_base", "mcts_ppm_vs_greedy", "ppm_selected_vs_majority",
                      "any_of_k_vs_majority", "mcts_any_vs_mcts_ppm"}
    # The ceilings of answer choice: a perfect selector's room over the vote
    # (2 problems) and over the PPM's choice in the tree (9 of 10 -> all 10).
    assert c["any_of_k_vs_majority"]["diff"] == pytest.approx(0.2)
    assert c["mcts_any_vs_mcts_ppm"]["diff"] == pytest.approx(0.1)
    assert report["rounds"][0]["comparisons"]["test"]["mcts_any_vs_mcts_ppm"]["diff"] == pytest.approx(0.3)
    g = c["greedy_vs_base"]
    assert g["n"] == 10 and g["diff"] == pytest.approx(0.8) and g["excludes_zero"]
    assert 0.5 <= g["ci"][0] <= 0.8 <= g["ci"][1] <= 1.0
    m = c["mcts_ppm_vs_greedy"]
    assert m["diff"] == pytest.approx(0.1) and m["ci"][0] == 0.0 and not m["excludes_zero"]
    assert c["ppm_selected_vs_majority"] == {"n": 10, "diff": 0.0, "ci": [0.0, 0.0],
                                             "excludes_zero": False}
    assert report["sets"] == ["test"]
    assert report["intervals"] == {"method": "paired bootstrap over problems", "level": 0.95,
                                   "samples": 1000, "seed": 0}
    md = open(os.path.join(run, "report.md")).read()
    lo, hi = (f"{100 * v:+.1f}" for v in g["ci"])
    assert f"| 4 | test | greedy - base greedy | 10 | +80.0 | [{lo}, {hi}] | yes |" in md
    assert "| 4 | test | PPM-selected - majority | 10 | +0.0 | [+0.0, +0.0] | no |" in md
    assert "| 4 | test | any of k correct - majority (ceiling) | 10 | +20.0 |" in md
    assert "round 1 test greedy - base greedy (" not in md  # 2 of 10: the interval holds 0
    assert "round 4 test greedy - base greedy (+80.0 points, n=10)" in md
    assert "| 4 | MCTS+PPM | 90.0 (n=10) |" in md and "| base | greedy | 0.0 (n=10) |" in md
    assert "Round 2 PPM pair accuracy: on 6 pairs of 1 problems held out of PPM training" in md
    assert "round 4 test: greedy - base greedy +80.0 points" in capsys.readouterr().out
    # Bad input: the run's files say the same problems are others (digests differ) -> not paired.
    path = os.path.join(run, "round_0", "eval", "correctness.json")
    data = json.load(open(path))
    data["sets"]["test"]["digests"][0] = "other question"
    json.dump(data, open(path, "w"))
    again = run_evolve(configs, run)
    assert again["rounds"][3]["comparisons"]["test"]["greedy_vs_base"]["n"] == 9


def test_report_says_when_rounds_were_evaluated_differently(configs, tmp_path):
    r3 = os.path.join(os.path.dirname(configs), "r3.yaml")
    with open(r3, "a") as f:
        f.write("inference_eval:\n  rollouts: 16\n")
    report = run_evolve(configs, str(tmp_path / "run"))
    assert [(g["rounds"], g["rollouts"]) for g in report["protocols"]] == [([1, 2], 12),
                                                                          ([3, 4], 16)]
    md = open(os.path.join(str(tmp_path / "run"), "report.md")).read()
    assert "NOT evaluated the same way" in md and "Evaluation protocol (rounds 3-4)" in md


def test_switches_sft_previous_and_ppm_base(configs, tmp_path):
    run = str(tmp_path / "run")
    run_evolve(configs, run, ["train.sft_init=previous", "evolve.ppm_init=base"], only="round0,round1,round2")
    base = os.path.join(run, "round_0", "pretrain", "model")
    assert _manifest(run, 1, "sft")["inputs"]["sft_init"] == base
    assert _manifest(run, 2, "sft")["inputs"]["sft_init"] == os.path.join(run, "round_1", "sft", "model")
    assert _manifest(run, 2, "ppm")["inputs"]["ppm_init"] == base


def test_ppm_init_previous_continues_the_previous_rounds_ppm(configs, tmp_path):
    run = str(tmp_path / "run")
    run_evolve(configs, run, ["evolve.ppm_init=previous"], only="round0,round1,round2,round3")
    base = os.path.join(run, "round_0", "pretrain", "model")
    assert _manifest(run, 1, "ppm")["inputs"]["ppm_init"] == base
    for r in (2, 3):
        assert _manifest(run, r, "ppm")["inputs"]["ppm_init"] == os.path.join(run, f"round_{r - 1}", "ppm", "model")


def test_only_and_from_run_parts(configs, tmp_path):
    run = str(tmp_path / "run")
    with pytest.raises(MissingInput, match="round1.problems, which has not finished"):
        run_evolve(configs, run, only="round1.search")
    run_evolve(configs, run, only="round1.problems")
    with pytest.raises(MissingInput, match="no base model"):
        run_evolve(configs, run, only="round1.search")
    run_evolve(configs, run, only="round0")
    report = run_evolve(configs, run, only="round1.search")
    assert sorted(os.listdir(os.path.join(run, "round_1"))) == ["problems", "search"]
    assert report["rounds"][0]["solved_share"] == 0.25 and report["rounds"][0]["greedy_acc"] is None
    report = run_evolve(configs, run, start="round1.extract")
    _same_rounds(report["rounds"], EXPECTED_ROUNDS)
    # Every unit of work ran exactly once.
    calls = _calls(run)
    assert len(calls) == len(set(calls))


def test_resume_after_a_kill_in_process(configs, tmp_path, monkeypatch):
    run = str(tmp_path / "run")
    monkeypatch.setenv("FAKE_KILL", "round2.search:3")
    with pytest.raises(evolve_fakes.SimulatedKill):
        run_evolve(configs, run)
    assert not os.path.exists(os.path.join(run, "round_2", "search", "manifest.json"))
    assert sum(c.startswith("round2.search:") for c in _calls(run)) == 3
    monkeypatch.delenv("FAKE_KILL")
    report = run_evolve(configs, run)
    _same_rounds(report["rounds"], EXPECTED_ROUNDS)
    searched = [c for c in _calls(run) if c.startswith("round2.search:")]
    assert len(searched) == 8 == len(set(searched))  # the first 3 were not redone


@pytest.mark.parametrize("kill_at", ["round1.search:0", "round3.search:5"])
def test_sigkill_then_same_command_gives_the_same_report(configs, tmp_path, kill_at):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), HERE]), "FAKE_KILL_MODE": "sigkill"}
    cmd = [sys.executable, "-m", "rstar_jax", "evolve", "--config", configs]
    clean = subprocess.run(cmd + ["--out", str(tmp_path / "clean")], env=env, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    killed = subprocess.run(cmd + ["--out", str(tmp_path / "killed")], env={**env, "FAKE_KILL": kill_at},
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL
    resumed = subprocess.run(cmd + ["--out", str(tmp_path / "killed")], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((tmp_path / "clean" / "report.json").read_text())
    b = json.loads((tmp_path / "killed" / "report.json").read_text())
    assert a["base"] == b["base"] and a["rounds"] == b["rounds"]


def test_cli_errors_exit_2(configs, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), HERE])}
    base = [sys.executable, "-m", "rstar_jax", "evolve", "--config", configs, "--out", str(tmp_path / "r")]
    for extra, needle in ((["--only", "round9"], "no such stage"),
                          (["--only", "round1.search"], "has not finished"),
                          (["evolve.stage_functions.search=nope:fn"], "cannot load")):
        out = subprocess.run(base + extra, env=env, capture_output=True, text=True)
        assert out.returncode == 2 and needle in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_demo_configs_plan_and_run_with_model_stages_faked(tmp_path):
    """configs/demo/evolve.yaml end to end: real world and problems stages,
    fake model stages (the real ones are exercised by the slow demo test)."""
    fakes = [f"evolve.stage_functions.{s}=evolve_fakes:{'evaluate' if s == 'eval' else s}"
             for s in ("pretrain", "search", "extract", "sft", "ppm", "eval")]
    small = ["data.arith_count=8", "data.arith_test_count=4", "data.arith_corpus_count=100"]
    demo = str(REPO / "configs/demo/evolve.yaml")
    plan = build_plan(demo)
    # By default the rounds start from the shipped base (a path relative to
    # the config files, absolute once loaded); pretraining is a switch.
    assert [s.id for s in plan][:3] == ["round0.world", "round0.eval", "round1.problems"]
    shipped = str(REPO / "configs/demo/base_model")
    assert {s.cfg.evolve.base_policy for s in plan} == {shipped}
    pretrain = ["evolve.base_stages=[world,pretrain,eval]", "evolve.base_policy=null"]
    assert [s.id for s in build_plan(demo, pretrain)][:3] == [
        "round0.world", "round0.pretrain", "round0.eval"]
    with pytest.raises(ConfigError, match="'pretrain' and evolve.base_policy is set"):
        build_plan(demo, pretrain[:1])
    r = {s.round: s.cfg for s in plan}
    assert (r[1].mcts.errors_threshold, r[2].mcts.errors_threshold) == (2, 1)
    assert r[3].mcts.ppm_init_value and not r[2].mcts.ppm_init_value
    assert r[4].mcts.unsolved_rollouts > r[3].mcts.unsolved_rollouts and r[4].mcts.unsolved_seeds == 1
    # Round 1's PPM trains longer; later rounds continue it (round files inherit each other).
    assert [r[i].train.ppm.max_steps for i in (1, 2, 3, 4)] == [160, 60, 60, 60]
    # Rounds 1-3 measure greedy only; round 4 every method (eval.round_methods).
    assert [r[i].eval.round_methods for i in (1, 4)] == [["greedy"], ["greedy", "best_of_n", "mcts_ppm"]]
    assert r[1].data.arith_test_seed != r[1].data.arith_seed != r[1].data.arith_corpus_seed
    run = str(tmp_path / "demo")
    report = run_evolve(demo, run, pretrain + fakes + small, echo=lambda s: None)
    assert [x["round"] for x in report["rounds"]] == [1, 2, 3, 4]
    world_manifest = _manifest(run, 0, "world")
    assert world_manifest["counts"]["corpus"] == 100
    assert _manifest(run, 1, "problems")["counts"] == {"train": 8, "test": 4}
    for rnd, stages in [(0, ("world", "pretrain", "eval"))] + [(i, STAGES) for i in (1, 2, 3, 4)]:
        for s in stages:
            assert _manifest(run, rnd, s)["stage"] == s


def test_compile_cache_keeps_compiled_programs_on_disk(tmp_path):
    # A subprocess: the cache is a process-wide JAX setting.
    cache = tmp_path / "cache"
    code = ("import sys, jax, jax.numpy as jnp\n"
            "from rstar_jax.utils.compile_cache import enable_compile_cache\n"
            "print(enable_compile_cache(sys.argv[1]))\n"
            "jax.jit(lambda x: x * 2 + 1)(jnp.ones(3)).block_until_ready()\n")
    out = subprocess.run([sys.executable, "-c", code, str(cache)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str(cache) and any(cache.iterdir())


def test_report_states_mcts_compute_per_problem_and_the_single_tree_mode():
    from rstar_jax.evolve.report import compute_lines, protocol_lines

    report = {"rounds": [{"round": 2, "benchmarks": {
        "test": {"mcts_avg_rollouts": 700.5, "mcts_avg_tokens": 12345.4},
        "gsm8k": {"mcts_avg_rollouts": None}}}],
        "protocols": [{"rounds": [2], **_default_protocol(), "mode": "single_tree", "runs": 1}]}
    assert compute_lines(report) == [
        "MCTS+PPM compute per problem, round 2: test: 700.5 rollouts, 12345 generated tokens."]
    assert "MCTS+PPM with one tree of 12 rollouts x 32 candidates" in protocol_lines(report)[0]
