"""Issue 18: the sandbox holds, the same way, for root and for an unprivileged uid.

Each finding has a test below, parametrised over who runs the pool: the test
process's own user and, when that is root, uid 65534 (dropped with setpriv
through `as_nobody.py`; CI runs as root). One probe process per user runs
every finding (findings_probe.py; a pool start costs seconds), and the tests
assert on what it saw.
"""

import json
import os
import subprocess
import sys

import pytest

from rstar_jax.config.schema import ExecutorConfig
from rstar_jax.execution import isolation
from rstar_jax.execution.pool import ExecutorPool

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
NOBODY = 65534


@pytest.fixture(scope="module", params=["own-user", "nobody"])
def seen(request):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": REPO, "HOME": "/tmp", "LANG": "C.UTF-8"}
    probe = [sys.executable, os.path.join(HERE, "findings_probe.py")]
    if request.param == "nobody":
        if os.geteuid() != 0:
            pytest.skip("already unprivileged: the own-user run is the non-root run")
        probe = [sys.executable, os.path.join(HERE, "as_nobody.py"), str(NOBODY), "--"] + probe
    r = subprocess.run(probe, capture_output=True, text=True, env=env, timeout=300, cwd="/")
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["uid"] == (NOBODY if request.param == "nobody" else os.geteuid())
    return out


def test_finding1_programs_cannot_harm_their_owner(seen):
    # Killing every visible process and deleting the user's files fails; the owner lives on.
    assert seen["alive"] and seen["f1_victim"]
    assert seen["f1"][0] == "PermissionError: [Errno 1] Operation not permitted"  # not even the worker
    assert seen["f1_restarts"] == 0
    assert all(o for o in seen["f1"][1:]) and "Read-only file system" in seen["f1"][1]
    assert seen["f1_serving"] == "42"


def test_finding2_valid_step_code_sees_the_standard_library(seen):
    assert seen["f2"] == ["2", "all imported"], seen["f2"]
    assert {"numpy", "sympy", "statistics", "pprint"} <= set(seen["f2_modules"])


def test_finding3_memory_is_bounded_for_the_whole_program(seen):
    threads, forked = seen["f3"]
    assert int(threads) < 4  # 4 x 300 MB do not fit in 1024 MB
    if not seen["forks"]:
        assert forked == "PermissionError: [Errno 1] Operation not permitted"


def test_finding4_a_program_cannot_enlarge_or_forge_its_result(seen):
    assert all(len(o) <= 1027 for o in seen["f4"]), [len(o) for o in seen["f4"]]
    assert seen["f4"][1] == "y" * 512 + "..." + "y" * 512
    assert seen["f4"][2].startswith("z" * 512 + "...")  # its own formatting, our truncation
    assert seen["f4c"] == ["1", "1\n2"]  # no snapshot poisoning


def test_finding5_nothing_outside_the_sandbox_is_reachable(seen):
    sock, unshare, host_file, passwd, pids, cmdlines = seen["f5"]
    assert sock == "PermissionError: [Errno 1] Operation not permitted" and not seen["f5_accepted"]
    assert unshare == "-1 1"  # EPERM
    assert seen["f5_raw"] == ["-1 1"] * 5, seen["f5_raw"]  # raw syscalls: socket, io_uring, clone, ptrace, mount
    assert host_file.startswith("FileNotFoundError") and passwd.startswith("FileNotFoundError")
    assert len(json.loads(pids)) < 10 and seen["f5_own_pid"] not in json.loads(pids)
    assert "findings_probe" not in cmdlines and "pytest" not in cmdlines


def test_finding6_line_numbers_are_part_of_the_cache_key(seen):
    assert seen["f6"] == ["2", "5"]


def test_finding7_printed_output_is_not_an_answer(seen):
    obs, reason = seen["f7"]
    assert obs == "\\boxed{7}" and reason is None


def test_finding8_worker_errors_are_reported(seen):
    assert seen["f8_path"] == "extra ok"
    assert seen["f8_error"] is not None and "BOOM-MARKER worker import failed" in seen["f8_error"]


def test_refuses_without_isolation(monkeypatch):
    monkeypatch.setattr(isolation, "probe", lambda: isolation.Isolation(
        False, None, "unavailable", False, "no bubblewrap: install it"))
    with pytest.raises(RuntimeError, match="refusing to run model code without a sandbox: no bubblewrap"):
        ExecutorPool(ExecutorConfig(num_workers=1, preload_modules=[], preload_grading=False))
    cfg = ExecutorConfig(num_workers=1, preload_modules=[], preload_grading=False, allow_unsandboxed=True)
    with ExecutorPool(cfg) as pool:
        assert pool.isolation == "none" and pool.run(["print(2)"])[0].observation == "2"


def test_stdlib_under_the_sandbox(pool):
    mods = ["statistics", "fractions", "decimal", "itertools", "functools", "collections", "math", "cmath",
            "random", "re", "pprint", "datetime", "numpy", "sympy"]
    try:
        import scipy  # noqa: F401

        mods.append("scipy")
    except ImportError:
        pass
    code = "\n".join(f"import {m}" for m in mods) + (
        "\nprint(statistics.mean([1, 2, 4]), fractions.Fraction(1, 3) * 3, decimal.Decimal('0.1') * 3,"
        " cmath.sqrt(-1), sympy.factorint(12), numpy.arange(3).sum(), re.sub('a', 'b', 'aa'))")
    res = pool.run([code])[0]
    assert pool.isolation == "bwrap"
    assert res == pool.run([code])[0] and not res.error, res
    assert res.observation == "2.3333 1 0.3 1j {2: 2, 3: 1} 3 bb"


def test_final_answer_only_from_the_model_text():
    from rstar_jax.data.prompts import END_OF_CODE, observation_suffix
    from rstar_jax.search import tree as T

    t = T.Tree()
    printed = t.nodes[T.add_child(t, 0, "<code>\nprint(x)\n" + END_OF_CODE + observation_suffix("\\boxed{7}"))]
    T.apply_terminal_rules(printed, 0, errors_threshold=2, max_depth=16)
    assert not printed.terminal
    written = t.nodes[T.add_child(t, 0, "<answer>so \\boxed{7}<end_of_answer>")]
    T.apply_terminal_rules(written, 0, errors_threshold=2, max_depth=16)
    assert written.terminal_reason == T.FINAL_ANSWER


def test_the_hostile_programs_suite_holds_for_an_unprivileged_uid():
    """tests/execution/test_hostile.py once more, whole, as uid 65534 (the
    ordinary run is the test process's own user: root in CI)."""
    if os.geteuid() != 0:
        pytest.skip("already unprivileged: the ordinary run of test_hostile.py is the non-root run")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": REPO, "HOME": "/tmp", "LANG": "C.UTF-8"}
    inner = ("import os, sys, pytest; print('uid', os.geteuid(), flush=True); "
             f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '--rootdir', {REPO!r}, "
             f"'-c', {os.path.join(REPO, 'pytest.ini')!r}, {os.path.join(HERE, 'test_hostile.py')!r}]))")
    cmd = [sys.executable, os.path.join(HERE, "as_nobody.py"), str(NOBODY), "--", sys.executable, "-c", inner]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd="/")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert f"uid {NOBODY}" in r.stdout
    summary = r.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary and "failed" not in summary, summary
