"""A warm executor worker: `python -m rstar_jax.execution.worker`.

Started by `ExecutorPool` as a fresh interpreter (spawn semantics: never a
fork of a process that may hold JAX threads) with a minimal environment, so
no secret of the parent is in its environment or `/proc/<pid>/environ`. It
imports the heavy modules (numpy, sympy, ...) once, then serves programs
read as JSON lines on stdin, answering on stdout.

Per program it forks a short-lived child (cheap: the imports are shared
copy-on-write) that:
- starts a new session, so the worker can kill its whole process group;
- dies with the worker (PR_SET_PDEATHSIG);
- closes every inherited descriptor, reads /dev/null, writes /dev/null;
- works in a private temporary directory, removed afterwards;
- runs under rlimits (address space, CPU, file size, process count, no core
  dumps), and, when the worker runs as root, under an unused uid of its own
  per worker (`ExecutorConfig.sandbox_uid_base` + worker index), so it can
  signal neither the worker nor other programs, cannot write outside its
  directory, and RLIMIT_NPROC (per uid) applies;
- runs the program (see `observation.run_program`) and writes one JSON
  result to a pipe, then `_exit`s, taking any threads with it.
The worker enforces the wall-clock limit, kills the child's process group,
and, being a child subreaper, also kills and reaps any descendant that
escaped the group (a double fork plus `setsid`), so no process outlives its
program.

Filesystem: as root, the worker also mounts private tmpfs over /tmp,
/var/tmp, /dev/shm and /run/lock in a mount namespace of its own (see
`isolate_filesystem`), so with the dropped uid nothing outside the program's
directory is writable.

No network: the worker moves itself into a new, empty network namespace at
start (as root, or through an unprivileged user namespace when the kernel
allows). Where neither works, each child installs an audit hook that refuses
to create non-Unix sockets; that fallback stops Python-level networking only
(ctypes could bypass it) and is reported as `isolation="audit-hook"`.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import resource
import select
import shutil
import signal
import sys
import tempfile
import time

from rstar_jax.execution.observation import run_program

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_RESULT_CAP = 1 << 20
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


_MS_NOSUID, _MS_NODEV, _MS_REC, _MS_PRIVATE = 2, 4, 1 << 14, 1 << 18
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
        if os.path.isdir(d):
            if _libc.mount(b"tmpfs", d.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, opts) != 0:
                return "shared-tmp"
    return "private-tmp"


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


def _child(task: dict, workdir: str, wfd: int, network: str) -> None:
    """Runs in the forked child; never returns."""
    try:
        os.setsid()
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, wfd)
        os.closerange(wfd + 1, 65536)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a big write raises EFBIG instead
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        os.chdir(workdir)
        os.environ.clear()
        os.environ.update({"HOME": workdir, "TMPDIR": workdir, "PATH": "/usr/bin:/bin",
                           "LANG": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
        tempfile.tempdir = workdir
        _reseed()
        _set_limits(task)
        uid = task.get("sandbox_uid")
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        if network == "audit-hook" and task.get("no_network", True):
            sys.addaudithook(_block_sockets)
        me, write = os.getpid(), os.write
        obs, err = run_program(task["code"], observation_chars=int(task["observation_chars"]),
                               max_output_chars=int(task["max_output_chars"]))
        if os.getpid() != me:  # a process the program forked: only the child itself reports
            os._exit(0)
        # Framed without json or builtins, which the program may have replaced.
        payload = obs.encode("utf-8", "surrogatepass")
        view = memoryview(b"%d %d\n" % (1 if err else 0, len(payload)) + payload)
        while view:
            view = view[write(wfd, view):]
    except BaseException:  # noqa: BLE001  (nothing may escape a child)
        os._exit(70)
    os._exit(0)


def _children() -> list:
    """Pids of this process's live children (including adopted orphans)."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _reap_all(first_pid: int) -> None:
    """Kills the child's group and every other descendant, and reaps them."""
    for _ in range(200):
        pids = _children()
        if not pids:
            return
        for pid in pids:
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        for pid in pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
    try:  # reap anything left without blocking
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def _describe_status(status: int, timeout: float, timed_out: bool) -> str:
    if timed_out:
        return f"TimeoutError: execution timed out after {timeout:g} seconds"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        if sig == signal.SIGXCPU:
            return f"TimeoutError: CPU time limit exceeded ({name})"
        return f"RuntimeError: program killed by signal {name}"
    return f"SystemExit: {os.WEXITSTATUS(status)}"


def _parse_frame(frame: bytes):
    """`b"{err} {n}\\n" + n bytes of UTF-8` -> result dict, or None if malformed."""
    head, sep, body = frame.partition(b"\n")
    try:
        err, n = head.split(b" ")
        if not sep or err not in (b"0", b"1") or int(n) != len(body):
            return None
        return {"observation": body.decode("utf-8", "replace"), "error": err == b"1"}
    except ValueError:
        return None


def _frame_complete(frame: bytes) -> bool:
    head, sep, body = frame.partition(b"\n")
    if not sep:
        return False
    try:
        return len(body) >= int(head.split(b" ")[-1])
    except ValueError:
        return True  # garbage: stop reading, it will not parse


def _await_result(pid: int, rfd: int, deadline: float):
    """Reads the child's frame until it is complete, the child exits, or the deadline.

    Waits on the result pipe and on a pidfd of the child together, so neither
    a crash without a result nor a grandchild holding the pipe open (which
    would delay EOF) costs extra time. Returns (frame bytes, timed_out).
    """
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    chunks, size = [], 0
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return b"".join(chunks), True
            fds = [rfd] + ([pidfd] if pidfd is not None else [])
            ready, _, _ = select.select(fds, [], [], left if pidfd is not None else min(left, 0.01))
            if rfd in ready:
                data = os.read(rfd, 65536)
                if data and size < _RESULT_CAP:
                    chunks.append(data)
                    size += len(data)
                if not data or _frame_complete(b"".join(chunks)):
                    return b"".join(chunks), False
                continue
            if pidfd is not None:
                exited = pidfd in ready
            else:  # peek without reaping: the caller reaps and reads the status
                exited = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
            if exited:
                while select.select([rfd], [], [], 0)[0]:  # drain what it wrote before dying
                    data = os.read(rfd, 65536)
                    if not data:
                        break
                    chunks.append(data)
                return b"".join(chunks), False
    finally:
        if pidfd is not None:
            os.close(pidfd)


def run_task(task: dict, network: str, base_tmp: str, send) -> dict:
    """Forks a sandboxed child for one program and returns its result record."""
    timeout = float(task["timeout_s"])
    workdir = tempfile.mkdtemp(prefix="p", dir=base_tmp)
    if task.get("sandbox_uid") is not None:
        os.chown(workdir, task["sandbox_uid"], task["sandbox_uid"])
    os.chmod(workdir, 0o700)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        _child(task, workdir, wfd, network)
    os.close(wfd)
    send({"id": task["id"], "pid": pid})
    deadline = time.monotonic() + timeout
    frame, timed_out, status = b"", False, None
    try:
        frame, timed_out = _await_result(pid, rfd, deadline)
    finally:
        os.close(rfd)
        if not timed_out:  # the child reported or died: give it the rest of the deadline to exit
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                if time.monotonic() >= deadline:
                    timed_out, status = True, None
                    break
                time.sleep(0.0002)
        try:  # the group outlives its leader while any member lives: kill it either way
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if status is None:
            try:
                status = os.waitpid(pid, 0)[1]
            except ChildProcessError:
                status = 0
        _reap_all(pid)
        shutil.rmtree(workdir, ignore_errors=True)
    result = None
    if not timed_out and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        result = _parse_frame(frame)
    if result is None:
        obs = _describe_status(status, timeout, timed_out)
        limit = int(task["observation_chars"])
        result = {"observation": obs[:limit], "error": True, "timed_out": timed_out,
                  "crashed": not timed_out}
    return {"id": task["id"], "observation": result["observation"], "error": result["error"],
            "timed_out": result.get("timed_out", False), "crashed": result.get("crashed", False)}


def _warm_up(modules) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001
            print(f"worker: cannot preload {name}: {e}", file=sys.stderr)
    if "sympy" in sys.modules:  # lazy sympy imports, paid once here not per program
        sp = sys.modules["sympy"]
        x = sp.Symbol("x")
        sp.solve(x**2 - 2, x)
        sp.simplify(sp.sin(x) ** 2 + sp.cos(x) ** 2)
        sp.Rational(1, 3) + sp.sqrt(2)
        sp.Matrix([[1, 2], [3, 4]]).det()


def main() -> int:
    """Serves tasks until stdin closes. Line protocol documented in pool.py."""
    config = json.loads(sys.stdin.readline())
    network = isolate_network() if config.get("no_network", True) else "none"
    filesystem = isolate_filesystem(config.get("tmp_size_mb", 256)) if config.get("sandbox_uid") is not None \
        else "shared-tmp"
    _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    _warm_up(config.get("preload_modules", []))
    base_tmp = tempfile.mkdtemp(prefix="rstar_exec_")
    os.chmod(base_tmp, 0o711)
    out = sys.stdout

    def send(obj: dict) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    send({"ready": True, "pid": os.getpid(), "isolation": network, "filesystem": filesystem})
    try:
        for line in sys.stdin:
            task = {**config, **json.loads(line)}
            send(run_task(task, network, base_tmp, send))
    finally:
        shutil.rmtree(base_tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
