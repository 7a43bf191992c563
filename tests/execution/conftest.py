"""One small pool shared by the executor tests, and a stray-process check."""

import os

import psutil
import pytest

from rstar_jax.config.schema import ExecutorConfig
from rstar_jax.execution.pool import ExecutorPool

SECRET = "hunter2-not-for-programs"


@pytest.fixture(scope="session")
def secret():
    return SECRET


@pytest.fixture(scope="session")
def pool():
    os.environ["RSTAR_TEST_SECRET"] = SECRET  # must never reach a program
    cfg = ExecutorConfig(num_workers=2, timeout_s=2.0, memory_limit_mb=1024)
    with ExecutorPool(cfg) as p:
        yield p
    os.environ.pop("RSTAR_TEST_SECRET", None)


def _ours(proc) -> bool:
    """A worker, a program child (forked from a worker) or a bubblewrap sandbox."""
    try:
        cmd = " ".join(proc.cmdline())
        return "rstar_jax.execution" in cmd or "bwrap" in cmd
    except psutil.Error:
        return False


@pytest.fixture(scope="session", autouse=True)
def no_stray_processes():
    """After the session (every pool closed), no executor process is left.

    Only executor processes are checked, so other suites' helpers cannot
    fail this one.
    """
    yield
    leftover = [c for c in psutil.Process().children(recursive=True)
                if c.is_running() and c.status() != psutil.STATUS_ZOMBIE and _ours(c)]
    assert not leftover, f"stray processes: {[(c.pid, c.cmdline()) for c in leftover]}"
