"""The pool's contract: order, isolation between programs, async, dedup, cache."""

import time

from rstar_jax.config.schema import ExecutorConfig
from rstar_jax.execution.pool import ExecutorPool, program_key
from rstar_jax.execution.types import ExecResult


def test_results_in_order_with_spec_semantics(pool):
    progs = ["print(1/3)", "1/0", "x = 5\nx * 2", "print('a' * 2000)", "import sympy as sp\nsp.sqrt(8)"]
    res = pool.run(progs)
    assert res[0] == ExecResult("0.3333")
    assert res[1] == ExecResult("ZeroDivisionError: division by zero", error=True)
    assert res[2] == ExecResult("10")
    assert res[3].observation == "a" * 512 + "..." + "a" * 512
    assert res[4] == ExecResult("2*sqrt(2)")


def test_nothing_leaks_between_programs(pool):
    pool.clear_cache()
    first = pool.run(["import math\nmath.pi = 3\nsecret_var = 1\nimport builtins\nbuiltins.len = None"])
    assert not first[0].error
    after = pool.run(["import math\nprint(math.pi)", "secret_var", "len('abc')"])
    assert after[0].observation == "3.1416"
    assert after[1].error and "NameError" in after[1].observation
    assert after[2].observation == "3"


def test_submit_is_async(pool):
    fut = pool.submit(["import time\ntime.sleep(0.3)\nprint('done')"])
    assert not fut.done()
    assert fut.result(timeout=10)[0].observation == "done"
    assert fut.done()
    empty = pool.submit([])
    assert empty.done() and empty.result() == []


def test_dedup_and_exact_text_cache(pool):
    pool.clear_cache()
    before = pool.stats()
    code = "import time\ntime.sleep(0.2)\nprint(7)"
    other = "# a comment\nimport time\ntime.sleep(0.2)   # pause\nprint(7)\n"
    res = pool.run([code, code, other])
    assert [r.observation for r in res] == ["7", "7", "7"]
    mid = pool.stats()
    assert mid["executed"] - before.get("executed", 0) == 2  # a comment can change the output
    assert mid["dedup_hits"] - before.get("dedup_hits", 0) == 1
    assert pool.run([other])[0].observation == "7"
    assert pool.stats()["cache_hits"] - before.get("cache_hits", 0) == 1
    assert program_key(code) != program_key(other)
    assert program_key(code) != program_key(code + "\n")


def test_timeouts_not_cached_and_per_call_timeout(pool):
    t0 = time.monotonic()
    res = pool.run(["import time\ntime.sleep(5)"], timeout_s=0.5)
    assert res[0].timed_out and res[0].error
    assert res[0].observation == "TimeoutError: execution timed out after 0.5 seconds"
    assert time.monotonic() - t0 < 3
    assert pool.run(["import time\ntime.sleep(0.1)\nprint('ok')"], timeout_s=0.5)[0].observation == "ok"


def test_close_is_idempotent_and_rejects_work():
    p = ExecutorPool(ExecutorConfig(num_workers=1, timeout_s=2.0, preload_modules=[], preload_grading=False))
    assert p.run(["print(1)"])[0].observation == "1"
    p.close()
    p.close()
    try:
        p.submit(["print(1)"])
    except RuntimeError:
        pass
    else:
        raise AssertionError("a closed pool accepted work")


def test_grade_many_in_the_pool(pool):
    from rstar_jax.execution.grading import grade_many

    pairs = [("1/2", "0.5"), ("3", "4"), ("(x+1)^2", "x^2+2x+1"), ("2", ["1", "2"]), ("}{", "1")]
    assert grade_many(pairs, executor=pool) == [True, False, True, True, False]


def test_random_state_differs_between_programs(pool):
    code = "import random\nimport numpy as np\nprint(random.random(), np.random.rand())"
    a = pool.run([code])[0].observation
    pool.clear_cache()
    b = pool.run([code])[0].observation
    assert a != b


def test_concurrent_submitters_get_their_own_results(pool):
    import threading

    outs = {}

    def submitter(t):
        outs[t] = pool.run([f"print({t} * 1000 + {i})" for i in range(40)])

    threads = [threading.Thread(target=submitter, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    for t in range(4):
        assert [r.observation for r in outs[t]] == [str(t * 1000 + i) for i in range(40)]


def test_dead_worker_is_replaced(pool):
    import os
    import signal

    fut = pool.submit(["import time\ntime.sleep(1.5)\nprint('never')"])
    time.sleep(0.5)
    restarts = pool.stats().get("worker_restarts", 0)
    for w in list(pool._workers):
        os.kill(w.proc.pid, signal.SIGKILL)
    res = fut.result(timeout=60)[0]
    assert res.error and res.observation == "RuntimeError: executor worker died while running the program"
    assert [r.observation for r in pool.run(["print(5)", "print(6)"])] == ["5", "6"]
    assert pool.stats()["worker_restarts"] - restarts >= 1  # the idle one is replaced when next used


def test_sandbox_binds_the_interpreter_and_package_trees():
    import os
    import sys

    import rstar_jax
    from rstar_jax.execution.isolation import needed_paths

    root = os.path.dirname(os.path.dirname(os.path.abspath(rstar_jax.__file__)))
    paths = needed_paths()

    def covered(p):
        return p.startswith("/usr/") or any(p == k or p.startswith(k + os.sep) for k in paths)

    for p in (root, os.path.realpath(sys.executable), sys.base_prefix, os.path.dirname(os.__file__)):
        assert covered(os.path.realpath(p)), (p, paths)
    assert "/" not in paths and not any(p in ("/root", "/home", "/etc") for p in paths)
