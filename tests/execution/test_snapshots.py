"""Prefix snapshots: resuming a kept program state equals running from scratch."""

import pytest

from rstar_jax.config.schema import ExecutorConfig
from rstar_jax.execution.pool import ExecutorPool

BASE = "import sympy as sp\nx = sp.Symbol('x')\nroots = sp.solve(x**2 - 2, x)\nprint(roots)"


@pytest.fixture(scope="module")
def snap_pool():
    """Snapshots fork, so under a sandbox they need a cgroup bounding the tree;
    where the machine has none they are off, and these tests run them in an
    explicitly unsandboxed pool (`executor.allow_unsandboxed`)."""
    from rstar_jax.execution import isolation

    cfg = ExecutorConfig(num_workers=2, timeout_s=2.0, prefix_snapshots=3, preload_grading=False,
                         allow_unsandboxed=True)
    with pytest.MonkeyPatch.context() as mp:
        if not isolation.probe().forks:
            mp.setattr(isolation, "probe", lambda: isolation.Isolation(False, None, "n/a", False, "test"))
        p = ExecutorPool(cfg)
    with p:
        yield p


def _resumed(pool):
    return pool.stats().get("resumed", 0)


def test_extensions_resume_and_match_fresh_runs(snap_pool, pool):
    steps = ["y = roots[1] ** 2\nprint(y)", "roots[0] * 3", "import numpy as np\nprint(np.sqrt(2) / 3)",
             "print(z)", "1 / 0"]
    assert snap_pool.run([BASE])[0].observation == "[-sqrt(2), sqrt(2)]"
    before = _resumed(snap_pool)
    got = snap_pool.run([BASE + "\n# a comment only\n" + s for s in steps])
    assert _resumed(snap_pool) - before >= 1
    want = pool.run([BASE + "\n" + s for s in steps])
    assert got == want
    assert got[0].observation == "[-sqrt(2), sqrt(2)]\n2"
    assert got[1].observation == "[-sqrt(2), sqrt(2)]\n-3*sqrt(2)"
    assert got[3].error and "NameError" in got[3].observation


def test_siblings_do_not_leak(snap_pool):
    prefix = "a = [1, 2]\nprint(len(a))"
    snap_pool.run([prefix])
    first = snap_pool.run([prefix + "\na.append(3)\nleaked = True\nprint(a)"])[0]
    second = snap_pool.run([prefix + "\nprint(a, 'leaked' in globals())"])[0]
    assert first.observation == "2\n[1, 2, 3]"
    assert second.observation == "2\n[1, 2] False"


def test_chain_of_resumptions(snap_pool):
    prog = "total = 0"
    snap_pool.run([prog])
    for i in range(1, 6):
        prog += f"\ntotal += {i}\nprint(total)"
        out = snap_pool.run([prog])[0]
        assert out.observation.split("\n")[-1] == str(sum(range(1, i + 1)))
    assert out.observation == "1\n3\n6\n10\n15"


def test_file_writing_prefix_is_not_resumed(snap_pool):
    prefix = "open('f.txt', 'w').write('hi')"
    snap_pool.run([prefix])
    before = _resumed(snap_pool)
    out = snap_pool.run([prefix + "\nprint(open('f.txt').read())"])[0]
    assert out.observation == "hi"
    assert _resumed(snap_pool) == before


def test_hostile_extensions_keep_pool_serving(snap_pool):
    prefix = "import os, time\nv = 7"
    snap_pool.run([prefix])
    res = snap_pool.run([prefix + "\nos._exit(3)", prefix + "\nwhile True:\n    pass",
                         prefix + "\nimport signal\nos.kill(os.getppid(), signal.SIGKILL)\ntime.sleep(1)",
                         prefix + "\nwhile True:\n    os.fork()"])
    assert all(r.error for r in res), res
    assert res[0].observation == "SystemExit: 3"
    assert res[1].timed_out
    assert snap_pool.run([prefix + "\nprint(v * 6)"])[0].observation == "42"


POISON = ("import rstar_jax.execution.observation as o\n"
          "o._compile = lambda source, skip=0: (compile(\"print('POISONED')\", 's', 'exec'), None)\n"
          "print(1)")


def test_a_step_cannot_poison_a_later_one(snap_pool):
    # Finding 4c: a prefix that rewrites the machinery is never kept as a snapshot.
    from rstar_jax.execution.snapshot_policy import may_snapshot

    assert not may_snapshot(POISON)
    assert snap_pool.run([POISON])[0].observation == "1"
    before = _resumed(snap_pool)
    assert snap_pool.run([POISON + "\nprint(1 + 1)"])[0].observation == "1\n2"
    assert _resumed(snap_pool) == before


def test_snapshot_policy_admits_plain_math_only():
    from rstar_jax.execution.snapshot_policy import may_snapshot

    assert may_snapshot(BASE) and may_snapshot("from fractions import Fraction\nf = Fraction(1, 3)\nf * 3")
    for bad in ("import os", "import json\njson.loads = None", "x = []\nx.append(1)\nimport math\nmath.pi = 3",
                "getattr(sp, 'x')", "f = lambda: 1\nf.__code__", "eval('1')", "import sympy\nsympy.sympify('x')",
                "from math import *", "def f():\n    global y\n    y = 1", "s = '__class__'"):
        assert not may_snapshot(bad), bad
