"""The sandboxed child that runs one program (forked by a warm worker).

Each child:
- starts a new session, so the worker can kill its whole process group;
- dies with the worker (PR_SET_PDEATHSIG);
- closes every inherited descriptor, reads /dev/null, writes /dev/null;
- works in a private temporary directory (removed afterwards) with a minimal
  environment and fresh random seeds;
- runs under rlimits (address space, CPU, file size, process count, open
  files, no core dumps), and, when the worker runs as root, under an unused
  uid of its own per worker (`ExecutorConfig.sandbox_uid_base` + worker
  index), so it can signal neither the worker nor other programs, cannot
  write outside its directory, and RLIMIT_NPROC (per uid) applies;
- runs the program (`observation.ProgramState`) and writes one framed
  result to a pipe, then `_exit`s, taking any threads with it; or, when
  prefix snapshots are on and resuming it would be exact, stays alive as a
  snapshot serving extensions of its program (`_serve_snapshot`).

The worker itself is isolated once at start: `isolate_network` (an empty
network namespace, as root or through an unprivileged user namespace; else
children install an audit hook refusing non-Unix sockets, which stops
Python-level networking only: ctypes could bypass it) and
`isolate_filesystem` (as root: private tmpfs over the world-writable
directories).
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

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)


def _write_file(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def isolate_network() -> str:
    """Moves this process into an empty network namespace; returns the mode."""
    if _libc.unshare(_CLONE_NEWNET) == 0:
        return "netns"
    uid, gid = os.getuid(), os.getgid()
    if _libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0:
        try:
            _write_file("/proc/self/setgroups", "deny")
            _write_file("/proc/self/uid_map", f"{uid} {uid} 1")
            _write_file("/proc/self/gid_map", f"{gid} {gid} 1")
        except OSError:
            pass
        return "userns+netns"
    return "audit-hook"


_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC, _MS_PRIVATE = 2, 4, 1 << 12, 1 << 14, 1 << 18
_CLONE_NEWNS = 0x00020000
SHARED_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")


def isolate_filesystem(tmp_size_mb: int) -> str:
    """Hides the shared world-writable directories behind private tmpfs mounts.

    Needs root (a mount namespace of our own). The new mounts are root-owned
    and mode 0755, so a program running under its dropped uid can write only
    in its own working directory, which the worker creates inside the private
    `/tmp`. Returns "private-tmp", or "shared-tmp" when not permitted (then a
    program can still write to /tmp and friends, as its own uid).
    """
    if os.geteuid() != 0 or _libc.unshare(_CLONE_NEWNS) != 0:
        return "shared-tmp"
    if _libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        return "shared-tmp"
    opts = f"mode=0755,size={int(tmp_size_mb)}m".encode()
    for d in SHARED_WRITABLE:
        if not os.path.isdir(d):
            continue
        # The interpreter, the venv or this package may live under /tmp (a
        # clone in /tmp, say): keep those trees visible by binding them back
        # into the fresh tmpfs through descriptors opened before it hides them.
        keep = _needed_under(d)
        fds = [os.open(k, os.O_PATH) for k in keep]
        try:
            if _libc.mount(b"tmpfs", d.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, opts) != 0:
                return "shared-tmp"
            for k, fd in zip(keep, fds):
                os.makedirs(k, mode=0o755, exist_ok=True)
                src = f"/proc/self/fd/{fd}".encode()
                if _libc.mount(src, k.encode(), None, _MS_BIND | _MS_REC, None) != 0:
                    return "shared-tmp"
        finally:
            for fd in fds:
                os.close(fd)
    return "private-tmp"


def _needed_under(directory: str) -> list:
    """Top-level entries of `directory` that hold the interpreter's prefix,
    an import path or this package (they must stay visible to programs)."""
    import rstar_jax

    package_root = os.path.dirname(os.path.dirname(os.path.abspath(rstar_jax.__file__)))
    paths = {sys.prefix, sys.exec_prefix, package_root, *(p for p in sys.path if p)}
    tops = set()
    for p in paths:
        for cand in {os.path.abspath(p), os.path.realpath(p)}:
            if cand.startswith(directory + os.sep):
                top = cand[len(directory) + 1:].split(os.sep)[0]
                tops.add(os.path.join(directory, top))
    return sorted(t for t in tops if os.path.isdir(t))


def _block_sockets(event: str, args) -> None:
    if event == "socket.__new__" and len(args) > 1 and args[1] != 1:  # AF_UNIX == 1
        raise PermissionError("network access is disabled in the sandbox")
    if event in ("socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo"):
        raise PermissionError("network access is disabled in the sandbox")


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


def run_child(task: dict, workdir: str, wfd: int, cmd_fd: int, network: str) -> None:
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
        uid = task.get("sandbox_uid")
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        if network == "audit-hook" and task.get("no_network", True):
            sys.addaudithook(_block_sockets)
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
    keep = cmd_fd >= 0 and not err and _may_snapshot(state, workdir)
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
