"""`load_problems` over the arith, jsonl and tfds sources, and `make-world`."""

import json
import subprocess
import sys

import pytest

from rstar_jax.config import load_config
from rstar_jax.data.problems import write_problems
from rstar_jax.data.sources import load_problems
from testutil import REPO, SHARED_DATA


def _data(*overrides):
    return load_config(None, list(overrides)).data


def test_arith_train_and_test_streams():
    d = _data("data.source=arith", "data.arith_count=12", "data.arith_test_count=8",
              "data.arith_levels=[2,4]", "data.arith_seed=5", "data.arith_test_seed=6")
    train, test = load_problems(d, "train"), load_problems(d, "test")
    assert len(train) == 12 and len(test) == 8
    assert {p.meta["level"] for p in train} == {2, 4}
    assert train[0].id == "arith-5-0" and test[0].id == "arith-6-0"
    assert not {p.question for p in train} & {p.question for p in test}
    limited = load_problems(_data("data.source=arith", "data.limit=3"), "train")
    assert len(limited) == 3


def test_jsonl_source_reads_both_paths(tmp_path):
    d = _data("data.source=arith", "data.arith_count=5")
    write_problems(str(tmp_path / "a.jsonl"), load_problems(d))
    cfg = _data("data.source=jsonl", f"data.path={tmp_path / 'a.jsonl'}",
                f"data.test_path={SHARED_DATA / 'benchmarks' / 'aime2024_test.json'}", "data.test_limit=4")
    assert [p.id for p in load_problems(cfg, "train")] == [f"arith-0-{i}" for i in range(5)]
    test = load_problems(cfg, "test")
    assert len(test) == 4 and test[0].answer


def test_bad_source_arguments():
    with pytest.raises(ValueError, match="data.test_path"):
        load_problems(_data("data.source=jsonl", "data.path=x"), "test")
    with pytest.raises(ValueError, match="split"):
        load_problems(_data("data.source=arith"), "dev")


def test_tfds_source_calls_load_benchmark(monkeypatch):
    import types

    from rstar_jax.data.problems import Problem

    calls = []
    fake = types.ModuleType("rstar_jax.data.benchmarks")

    def load_benchmark(name, limit=None):
        calls.append((name, limit))
        return [Problem(id=str(i), question=f"q{i}", answer="1") for i in range(10)]

    fake.load_benchmark = load_benchmark
    monkeypatch.setitem(sys.modules, "rstar_jax.data.benchmarks", fake)
    got = load_problems(_data("data.source=tfds", "data.path=gsm8k", "data.test_limit=3"), "test")
    assert calls == [("gsm8k", 3)] and [p.id for p in got] == ["0", "1", "2"]


def test_make_world_cli_writes_and_is_idempotent(tmp_path):
    cfg = tmp_path / "w.yaml"
    cfg.write_text("# test world\ndata:\n  source: arith\n  arith_count: 20\n  arith_test_count: 10\n"
                   "  arith_corpus_count: 200\n  tokenizer_vocab_size: 300\nmodel:\n  vocab_size: 320\n")
    out = tmp_path / "world"
    cmd = [sys.executable, "-m", "rstar_jax", "make-world", "--config", str(cfg), "--out", str(out)]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert first.returncode == 0, first.stderr
    assert "train=20 test=10 corpus=200" in first.stdout
    rows = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and rows[0]["id"] == "arith-0-0" and rows[0]["level"] == 1
    mtime = (out / "corpus.jsonl").stat().st_mtime_ns
    second = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert second.returncode == 0 and (out / "corpus.jsonl").stat().st_mtime_ns == mtime
    bad = subprocess.run(cmd + ["model.vocab_size=100"], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "vocab_size" in bad.stderr and "Traceback" not in bad.stderr
