"""Hostile programs: each ends in an error observation within its timeout, and
the pool keeps serving (timeouts here are 2 s; see conftest)."""

import os
import socket
import time

import pytest

HOSTILE = {
    "infinite_loop": ("while True:\n    pass", "TimeoutError"),
    "sleep": ("import time\ntime.sleep(100)", "TimeoutError"),
    "alloc_20gb": ("x = bytearray(20 * 1024**3)", "MemoryError"),
    "numpy_20gb": ("import numpy as np\nx = np.ones(20 * 1024**3 // 8)", "Unable to allocate"),
    "fork_bomb": ("import os\nwhile True:\n    os.fork()", None),
    "os_exit": ("import os\nos._exit(3)", "SystemExit: 3"),
    "sys_exit": ("import sys\nsys.exit(0)", "SystemExit: 0"),
    "kill_parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nimport time\ntime.sleep(1)", None),
    # Recursion through a C call (max's key) overflows the C stack.
    "deep_recursion": ("import sys\nsys.setrecursionlimit(10**9)\n"
                       "def f(n):\n    return max([n], key=f)\nf(0)", "SIGSEGV"),
    "ctypes_null": ("import ctypes\nctypes.string_at(0)", "SIGSEGV"),
    "endless_output": ("while True:\n    print('x' * 10**6)", "TimeoutError"),
    "outliving_thread": ("import threading, time\n"
                         "threading.Thread(target=lambda: time.sleep(100)).start()\nprint('started')",
                         "TimeoutError"),
    "escaping_grandchild": ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(100)\n"
                            "raise RuntimeError('parent done')", "RuntimeError: parent done"),
}


# Where programs may not fork (no cgroup bounds the whole tree, see
# execution/isolation.py), a forking program fails at its fork instead.
NO_FORK_EXPECTED = {"escaping_grandchild": "PermissionError: [Errno 1] Operation not permitted"}


def _assert_serving(pool):
    assert pool.run(["print(6 * 7)"])[0].observation == "42"


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_program(pool, name):
    code, expected = HOSTILE[name]
    if not pool.forks:
        expected = NO_FORK_EXPECTED.get(name, expected)
    pool.clear_cache()
    t0 = time.monotonic()
    res = pool.run([code])[0]
    took = time.monotonic() - t0
    assert res.error, res
    assert took < pool.timeout_s + 3, took
    if expected is not None:
        assert expected in res.observation, res
    assert len(res.observation) <= 1027
    _assert_serving(pool)


def test_loopback_socket_refused(pool):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        res = pool.run([f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('in')"])
        assert res[0].error and "in" != res[0].observation, res
    finally:
        server.close()
    _assert_serving(pool)


def test_cannot_write_outside_workdir(pool):
    target = f"/tmp/rstar_exec_test_{os.getpid()}"
    res = pool.run([f"open({target!r}, 'w').write('x')", "open('inside.txt', 'w').write('ok')\nprint(open('inside.txt').read())"])
    assert res[1].observation == "ok"
    assert pool.filesystem == "private-tmp"
    assert not os.path.exists(target)  # its /tmp is the sandbox's own
    here = os.path.dirname(os.path.abspath(__file__))
    res = pool.run([f"open({here + '/evil.txt'!r}, 'w').write('x')"])
    assert res[0].error and "Read-only file system" in res[0].observation
    assert not os.path.exists(here + "/evil.txt")


def test_no_secrets_in_environment(pool, secret):
    code = ("import os\nprint(dict(os.environ))\nprint(open('/proc/self/environ').read())\n"
            "print(open(f'/proc/{os.getppid()}/environ').read())")
    res = pool.run([code])[0]
    assert secret not in res.observation
    grand = pool.run([f"print(open('/proc/{os.getpid()}/environ').read())"])[0]
    assert grand.error and "FileNotFoundError" in grand.observation  # its own PID namespace


def test_many_hostile_at_once(pool):
    codes = [c for c, _ in HOSTILE.values()] + ["print(1)"]
    pool.clear_cache()
    t0 = time.monotonic()
    res = pool.run(codes)
    assert all(r.error for r in res[:-1]) and res[-1].observation == "1"
    assert time.monotonic() - t0 < 60
    _assert_serving(pool)
