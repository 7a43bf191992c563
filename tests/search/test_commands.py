"""The CLI handlers, with the mock engine, PPM and executor injected where
the real factories would be imported."""

import json
import sys
import types

import pytest
from search.search_helpers import add_problems

import rstar_jax.inference
from rstar_jax.cli import main
from rstar_jax.testing import mock


@pytest.fixture
def fake_factories(monkeypatch):
    monkeypatch.setattr(rstar_jax.inference, "load_policy_engine",
                        lambda cfg, **kw: mock.MockEngine(steps=2, seeded=True), raising=False)
    monkeypatch.setattr(rstar_jax.inference, "load_ppm_scorer", lambda cfg, **kw: mock.MockScorer(),
                        raising=False)
    import rstar_jax.execution as pkg
    for name, attrs in mock.fake_execution_modules().items():
        m = types.ModuleType(name)
        for k, v in attrs.items():
            setattr(m, k, v)
        monkeypatch.setitem(sys.modules, name, m)
        monkeypatch.setattr(pkg, name.rsplit(".", 1)[1], m, raising=False)


def _write_problems(path, problems, with_answer=True):
    path.write_text("\n".join(json.dumps({"id": p.id, "question": p.question,
                                          **({"answer": p.answer} if with_answer else {})})
                              for p in problems))


def test_search_extract_merge_end_to_end(tmp_path, fake_factories, capsys, repo_root):
    probs = tmp_path / "p.jsonl"
    _write_problems(probs, add_problems(3))
    base = str(repo_root / "configs" / "base.yaml")
    out = tmp_path / "trees"
    rc = main(["search", "--config", base, "--problems", str(probs), "--out", str(out),
               "mcts.rollouts=3", "mcts.candidates=2", "logging.progress=false"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["searched"] == 3 and summary["solved"] == 3
    assert main(["merge-trees", "--trees", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["records"] == 3
    assert main(["extract", "--trees", str(out), "--out", str(tmp_path / "data")]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["problems"] == 3 and s["sft_records"] >= 3
    # Rerun: everything is skipped.
    assert main(["search", "--config", base, "--problems", str(probs), "--out", str(out),
                 "mcts.rollouts=3", "mcts.candidates=2"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["skipped"] == 3


def test_search_refuses_gold_mode_without_answers(tmp_path, capsys, repo_root):
    probs = tmp_path / "p.jsonl"
    _write_problems(probs, add_problems(2), with_answer=False)
    rc = main(["search", "--config", str(repo_root / "configs" / "base.yaml"), "--problems",
               str(probs), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "no gold answer" in capsys.readouterr().err


def test_bad_paths_exit_2(tmp_path, capsys):
    assert main(["extract", "--trees", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert main(["merge-trees", "--trees", str(tmp_path)]) == 2
    assert "no trees" in capsys.readouterr().err
