"""`search` into an existing directory: the same run resumes; another question
under the same id, another seed, budget or model is refused before any model
loads (exit 2, one line naming what differs) unless --force."""

import json
import os

import pytest
from search.search_helpers import add_problems, make_cfg
from search.test_commands import _write_problems, fake_factories  # noqa: F401  (fixture)

import rstar_jax.inference
from rstar_jax.cli import main
from rstar_jax.data.problems import Problem
from rstar_jax.search.run import ResumeMismatch, search_to_dir
from rstar_jax.testing.mock import MOCK_HOOKS, FakeExecutor, MockEngine
from rstar_jax.utils.fingerprint import CONFIG_FILE, FINGERPRINT_FILE, SUPERSEDED_DIR

BUDGET = ["mcts.rollouts=3", "mcts.candidates=2", "logging.progress=false"]


@pytest.fixture
def search(tmp_path, fake_factories, capsys, repo_root):  # noqa: F811
    """Runs `rstar-jax search` on p.jsonl into trees/; returns (rc, summary or None, stderr)."""
    base = str(repo_root / "configs" / "base.yaml")

    def run(*extra):
        rc = main(["search", "--config", base, "--problems", str(tmp_path / "p.jsonl"),
                   "--out", str(tmp_path / "trees"), *BUDGET, *extra])
        cap = capsys.readouterr()
        lines = cap.out.strip().splitlines()
        return rc, (json.loads(lines[-1]) if rc == 0 else None), cap.err

    _write_problems(tmp_path / "p.jsonl", add_problems(3))
    return run


def no_model_load(monkeypatch):
    def refuse(cfg, **kw):
        raise AssertionError("a model was loaded before the refusal")

    monkeypatch.setattr(rstar_jax.inference, "load_policy_engine", refuse, raising=False)


def refused(rc, err, *fragments):
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for f in fragments:
        assert f in err, (f, err)


def test_same_everything_resumes(search, tmp_path):
    rc, summary, _ = search()
    assert rc == 0 and summary["searched"] == 3
    fp = json.loads((tmp_path / "trees" / FINGERPRINT_FILE).read_text())
    assert fp["config"]["mcts.rollouts"] == 3 and fp["command"] == "search"
    assert "rollouts: 3" in (tmp_path / "trees" / CONFIG_FILE).read_text()
    rc, summary, _ = search("engine.num_slots=16")  # speed only: still the same run
    assert rc == 0 and summary["skipped"] == 3 and summary["searched"] == 0


def test_question_changed_under_the_same_id_is_refused(search, tmp_path, monkeypatch):
    assert search()[0] == 0
    probs = add_problems(3)
    probs[1] = Problem("p1", "What is 100 + 1?", "101")
    _write_problems(tmp_path / "p.jsonl", probs)
    no_model_load(monkeypatch)
    rc, _, err = search()
    refused(rc, err, "problems problems: the file's contents changed", "--force")


def test_seed_changed_is_refused(search, monkeypatch):
    assert search()[0] == 0
    no_model_load(monkeypatch)
    rc, _, err = search("seed=7")
    refused(rc, err, "seed 0 -> 7")


def test_budget_changed_is_refused(search, monkeypatch):
    assert search()[0] == 0
    no_model_load(monkeypatch)
    rc, _, err = search("mcts.rollouts=4", "mcts.max_depth=9")
    refused(rc, err, "mcts.rollouts 3 -> 4", "mcts.max_depth 16 -> 9")


def test_force_sets_the_old_trees_aside_and_starts_again(search, tmp_path):
    assert search()[0] == 0
    rc, summary, _ = search("seed=7", "--force")
    assert rc == 0 and summary["searched"] == 3 and summary["skipped"] == 0
    (old,) = os.listdir(tmp_path / "trees" / SUPERSEDED_DIR)
    assert (tmp_path / "trees" / SUPERSEDED_DIR / old / "trees.0.jsonl").exists()
    assert json.loads((tmp_path / "trees" / FINGERPRINT_FILE).read_text())["config"]["seed"] == 7


def test_a_directory_of_unknown_origin_is_refused(search, tmp_path):
    (tmp_path / "trees").mkdir()
    (tmp_path / "trees" / "trees.0.jsonl").write_text("")
    rc, _, err = search()
    refused(rc, err, "records no fingerprint")


def test_search_to_dir_never_resumes_by_id_alone(tmp_path):
    """The library call (evolve uses it) checks each record's question too."""
    cfg = make_cfg(rollouts=2, candidates=2)
    out = str(tmp_path / "trees")
    search_to_dir(cfg, add_problems(2), out, MockEngine(steps=2), FakeExecutor(), None,
                  MOCK_HOOKS, process_index=0, process_count=1)
    other = [Problem("p0", "What is 50 + 4?", "54")] + add_problems(2)[1:]
    with pytest.raises(ResumeMismatch, match="another question under the same id"):
        search_to_dir(cfg, other, out, MockEngine(steps=2), FakeExecutor(), None, MOCK_HOOKS,
                      process_index=0, process_count=1)
