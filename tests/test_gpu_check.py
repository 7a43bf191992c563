"""benchmarks/gpu_check.sh, the one-command GPU check, run on the CPU.

The GPU host is lent rarely and for minutes, so the script must work the
first time there: these tests run every stage of it at tiny size
(`--dry-run`), and its stop on a missing package. No wheels are fetched.
"""

import json
import os
import subprocess
import sys

import pytest

from testutil import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def _env(out, python=sys.executable):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")}
    env.update(OUT=str(out), PYTHON=str(python))
    return env


@pytest.mark.slow
def test_dry_run_runs_every_stage_and_returns_at_most_eight_flat_files(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run"], env=_env(out), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert all((out / f).is_file() for f in files) and len(files) <= 8, files  # the device tool returns 8
    assert files == sorted(["summary.txt", "run.log", "bench_engine.json", "decode_parts_b2.json",
                            "decode_parts_b1.json", "bench_sampling.json", "bench_paged.json",
                            "warm_start.json"])
    paged = json.loads((out / "bench_paged.json").read_text())
    assert paged["speed_tokens_identical"] == {"1": True, "2": True}
    assert "gather" in paged["attention_paths"]["2"]["paged"]
    engine = json.loads((out / "bench_engine.json").read_text())
    assert engine["setup"]["model"] == "configs/models/tiny.yaml"
    assert engine["tokens_per_s"]["2"] > 0 and engine["decode_roofline_share"]["2"] > 0
    assert "decode_attention" in engine["warmup_report"]["2"]
    for b in (1, 2):
        parts = json.loads((out / f"decode_parts_b{b}.json").read_text())
        assert parts["batch"] == b and parts["reps"] == 2 and parts["decode_attention_paths"]
        assert "full" in parts["groups"]["attention"]
    sampling = json.loads((out / "bench_sampling.json").read_text())
    assert sorted(sampling["batches"]) == ["1", "2"]
    assert json.loads((out / "warm_start.json").read_text())["warmup_s"]["2"] > 0
    summary = (out / "summary.txt").read_text()
    assert "attention path (engine, per batch)" in summary and "attention paths run" in summary
    assert "rstar_gpu_check_dry" in summary and str(out) not in summary.split("cache ", 1)[1].split("\n")[0]
    assert "not complete" not in summary and "done in" in summary


def test_a_missing_package_stops_it_with_one_line(tmp_path):
    """A package that still fails to import after the wheels: one line on
    stderr naming it, exit status 1, no stage run."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "omegaconf.py").write_text("raise ImportError('simulated: no omegaconf wheel')\n")
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{shadow}:$PYTHONPATH" exec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run"], env=_env(out, wrapper), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "gpu_check: import check failed: cannot import omegaconf: ImportError: simulated: no omegaconf wheel"]
    assert "running" not in (out / "summary.txt").read_text()  # no stage started
    assert sorted(p.name for p in out.iterdir()) == ["run.log", "summary.txt"]


def test_an_unknown_argument_is_refused():
    proc = subprocess.run(["bash", str(SCRIPT), "--tyni"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip() == "gpu_check: unknown argument '--tyni' (use --dry-run)"
