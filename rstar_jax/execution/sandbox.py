"""The sandboxed child that runs one program (forked by a warm worker).

The worker itself runs inside the kernel sandbox built by `isolation.py`
(user, mount, PID, network namespaces). Each child additionally:
- starts a new session, so the worker can kill its whole process group;
- dies with the worker (PR_SET_PDEATHSIG);
- closes every inherited descriptor, reads /dev/null, writes /dev/null;
- works in a private temporary directory (removed afterwards) with a minimal
  environment and fresh random seeds;
- runs under rlimits (address space, CPU, file size, process count, open
  files, no core dumps) and, last, the seccomp filter of `seccomp.py` (no
  sockets, namespaces, mounts, ptrace; no fork unless the whole tree is
  bounded by a cgroup);
- runs the program (`observation.ProgramState`) and writes one framed
  result to a pipe, then `_exit`s, taking any threads with it; or, when
  prefix snapshots are on and resuming it would be exact, stays alive as a
  snapshot serving extensions of its program (`_serve_snapshot`).

Nothing the child writes is trusted: the worker and then the pool bound
and truncate what it reports (issue 18, finding 4).
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import socket
import sys
import tempfile
import time

from rstar_jax.execution.observation import ProgramState
from rstar_jax.execution.seccomp import install

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_DUMPABLE = 4
_libc = ctypes.CDLL(None, use_errno=True)


def _reseed() -> None:
    """Fresh random state, as a new interpreter would have (forks share the worker's)."""
    import random

    random.seed()
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed()


def _set_limits(task: dict) -> None:
    mb = 1 << 20

    def cap(which, value):
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass

    cap(resource.RLIMIT_CORE, 0)
    cap(resource.RLIMIT_AS, int(task["memory_limit_mb"]) * mb)
    cpu = max(1, int(task["cpu_limit_s"]))
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    except (ValueError, OSError):
        pass
    cap(resource.RLIMIT_FSIZE, int(task["file_size_limit_mb"]) * mb)
    cap(resource.RLIMIT_NPROC, int(task["max_processes"]))
    cap(resource.RLIMIT_NOFILE, 256)


def _enter_workdir(workdir: str) -> None:
    os.chdir(workdir)
    os.environ.update({"HOME": workdir, "TMPDIR": workdir})
    tempfile.tempdir = workdir


def run_child(task: dict, workdir: str, wfd: int, cmd_fd: int) -> None:
    """Runs in the forked child; never returns."""
    try:
        os.setsid()
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        keep = sorted(fd for fd in (wfd, cmd_fd) if fd >= 0)
        lo = 3
        for fd in keep:
            os.closerange(lo, fd)
            lo = fd + 1
        os.closerange(lo, 65536)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a big write raises EFBIG instead
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        os.environ.clear()
        os.environ.update({"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
                           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
        _enter_workdir(workdir)
        _reseed()
        _set_limits(task)
        bpf = task.get("seccomp")
        if bpf:
            install(bytes.fromhex(bpf))  # last: the machinery above needs nothing it denies
        state = ProgramState(int(task["max_output_chars"]))
        _run_and_report(state, task, 0, workdir, wfd, cmd_fd)
    except BaseException:  # noqa: BLE001  (nothing may escape a child)
        os._exit(70)
    os._exit(0)


def _may_snapshot(state: ProgramState, workdir: str) -> bool:
    """Whether resuming this process equals re-running its program from scratch."""
    if not state.resumable:
        return False
    try:
        me = os.getpid()
        with open(f"/proc/{me}/task/{me}/children") as f:
            if f.read().split():
                return False
        return os.getcwd() == workdir and not os.listdir(workdir)
    except OSError:
        return False


def _run_and_report(state: ProgramState, task: dict, skip: int, workdir: str, wfd: int, cmd_fd: int):
    """Runs (the rest of) a program, reports it, then exits or serves as a snapshot."""
    me, write, close = os.getpid(), os.write, os.close
    obs, err = state.run(task["code"], skip=skip, observation_chars=int(task["observation_chars"]))
    if os.getpid() != me:  # a process the program forked: only the child itself reports
        os._exit(0)
    keep = cmd_fd >= 0 and task.get("keep") is True and not err and _may_snapshot(state, workdir)
    # Framed without json or builtins, which the program may have replaced.
    payload = obs.encode("utf-8", "surrogatepass")
    view = memoryview(b"%d %d %d\n" % (1 if err else 0, len(payload), 1 if keep else 0) + payload)
    while view:
        view = view[write(wfd, view):]
    close(wfd)
    if not keep:
        os._exit(0)
    _serve_snapshot(state, task, cmd_fd)


def _serve_snapshot(state: ProgramState, task: dict, cmd_fd: int) -> None:
    """Waits for extensions of this program; runs each in a grandchild.

    A command is JSON `{"code", "skip", "workdir", "worker"}` with two
    descriptors: the new result pipe and the new command socket. The
    grandchild is forked through an intermediate that exits at once, so it is
    adopted by the worker (a child subreaper) and handled like any child.
    """
    sock = socket.socket(fileno=cmd_fd)
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 1 << 22, 2)
        except OSError:
            os._exit(0)
        if not msg or len(fds) != 2:
            os._exit(0)
        cmd = json.loads(msg)
        wfd, new_cmd = fds
        mid = os.fork()
        if mid == 0:
            if os.fork():
                os._exit(0)
            _grandchild(state, {**task, **cmd}, sock, wfd, new_cmd)
        os.close(wfd)
        os.close(new_cmd)
        os.waitpid(mid, 0)


def _grandchild(state: ProgramState, task: dict, parent_sock, wfd: int, cmd_fd: int) -> None:
    try:
        parent_sock.close()
        for _ in range(20000):  # wait to be adopted by the worker (about 0.1 ms)
            if os.getppid() == task["worker"]:
                break
            time.sleep(0.0001)
        else:
            os._exit(71)
        os.setsid()
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        os.write(wfd, b"P %d\n" % os.getpid())
        _enter_workdir(task["workdir"])
        _run_and_report(state, task, int(task["skip"]), task["workdir"], wfd, cmd_fd)
    except BaseException:  # noqa: BLE001
        os._exit(70)
    os._exit(0)
