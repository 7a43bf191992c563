"""The demo's pretraining gives bit-identical losses whatever the host's core
count and instruction-set settings, with `runtime.xla_cpu_deterministic`
(issue 26: the same config pretrained different base models on two hosts).

What differs between hosts, reproduced on one: the cores the process may
use and the instruction set XLA targets (each run asks XLA for another ISA
through the user's own XLA_FLAGS, which the pin overrides). The pool is
sized by `runtime.intra_op_threads`: with 1, a run on all cores and a run
limited to one core (a smaller host) must agree; with 2 (the demo's), runs
asking for AVX-512 and for SSE4.2 must agree (a 2-core host cannot play a
bigger one). Without the pin these runs differ from the first steps on
(measured: benchmarks/RESULTS.md, determinism); with it every logged loss
and gradient norm is the same.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from rstar_jax.utils.xla_flags import deterministic_flags, pin_cpu_numerics
from testutil import REPO

SHORT = ["evolve.base_stages=[world,pretrain,eval]", "evolve.base_policy=null",
         "evolve.pretrain.max_steps=4", "train.log_every=1", "evolve.compile_cache=null",
         "logging.progress=false"]


def _evolve(out, only, xla_flags, one_core=False, threads=1):
    env = dict(os.environ, XLA_FLAGS=xla_flags)
    cores = sorted(os.sched_getaffinity(0))
    pre = (lambda: os.sched_setaffinity(0, {cores[-1]})) if one_core else None
    cmd = [sys.executable, "-m", "rstar_jax", "evolve", "--config", "configs/demo/evolve.yaml",
           "--out", str(out), "--only", only, *SHORT, f"runtime.intra_op_threads={threads}"]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
                         preexec_fn=pre)
    assert res.returncode == 0, res.stderr[-3000:]


def _logged(run):
    rows = [json.loads(line) for line in
            (run / "round_0/pretrain/train/metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(r["step"], r["split"], r["loss"], r.get("grad_norm")) for r in rows if "loss" in r]


@pytest.mark.slow
@pytest.mark.parametrize("threads,settings", [
    (1, (("all_cores", "--xla_cpu_max_isa=AVX512", False),
         ("one_core", "--xla_cpu_max_isa=SSE4_2", True))),
    (2, (("avx512", "--xla_cpu_max_isa=AVX512", False),
         ("sse42", "--xla_cpu_max_isa=SSE4_2", False))),
], ids=["pool1_cores_and_isa", "pool2_isa"])
def test_pinned_pretraining_is_bit_identical_across_cores_and_isa(tmp_path, threads, settings):
    if len(os.sched_getaffinity(0)) < threads:
        pytest.fail(f"this test needs {threads} usable cores to pin a pool of {threads}")
    world = tmp_path / "world"
    _evolve(world, "round0.world", "")
    runs = {}
    for name, flags, one_core in settings:
        run = tmp_path / name
        shutil.copytree(world / "round_0/world", run / "round_0/world")
        _evolve(run, "round0.pretrain", flags, one_core, threads)
        runs[name] = _logged(run)
        report = json.loads((run / "report.json").read_text())
        assert report["runtime"]["xla_cpu_deterministic"] is True
        assert report["runtime"]["intra_op_threads"] == threads
    first, second = runs.values()
    assert len(first) == 5  # 4 train steps + the final held-out loss
    assert first == second


def test_pin_replaces_conflicting_flags_and_keeps_the_rest(monkeypatch):
    import rstar_jax.utils.xla_flags as xf

    monkeypatch.setattr(xf, "_backend_started", lambda: False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_cpu_max_isa=SSE4_2")
    assert pin_cpu_numerics(True)
    flags = os.environ["XLA_FLAGS"].split()
    assert flags[0] == "--xla_force_host_platform_device_count=8"
    assert "--xla_cpu_max_isa=SSE4_2" not in flags
    assert set(deterministic_flags()) <= set(flags)
    assert "--xla_cpu_experimental_ynn_fusion_type=" in flags


def test_pin_refuses_once_the_backend_started(monkeypatch):
    """XLA reads its flags once: a started process cannot be pinned, and
    saying so beats a run that silently rounds as the host likes."""
    import rstar_jax.utils.xla_flags as xf

    monkeypatch.setattr(xf, "_backend_started", lambda: True)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    with pytest.raises(RuntimeError, match="before JAX starts"):
        pin_cpu_numerics(True)
    assert not pin_cpu_numerics(False)


def test_pool_takes_the_configured_cores_and_warns_when_the_host_has_fewer(caplog, monkeypatch):
    """The pool's size is the config's, not the host's: inside the context
    the process may use exactly `threads` cores (the pool JAX creates there
    has that many threads); after it, all of them again. A host with fewer
    cores says so, since its sums split otherwise."""
    import rstar_jax.utils.xla_flags as xf

    monkeypatch.setattr(xf, "_POOL_THREADS", 0)  # restored after: the process's own state
    allowed = os.sched_getaffinity(0)
    with xf.fixed_intra_op_pool(1):
        assert len(os.sched_getaffinity(0)) == 1
    assert os.sched_getaffinity(0) == allowed
    assert xf.pool_threads() == 1
    with caplog.at_level("WARNING", logger="rstar_jax.utils.xla_flags"):
        with xf.fixed_intra_op_pool(len(allowed) + 1):
            assert os.sched_getaffinity(0) == allowed
    assert os.sched_getaffinity(0) == allowed
    assert xf.pool_threads() == len(allowed)
    assert f"fewer than runtime.intra_op_threads={len(allowed) + 1}" in caplog.text
    with pytest.raises(ValueError, match="intra_op_threads"):
        with xf.fixed_intra_op_pool(0):
            pass
