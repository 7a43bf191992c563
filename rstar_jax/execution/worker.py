"""A warm executor worker: `python -m rstar_jax.execution.worker`.

Started by `ExecutorPool` as a fresh interpreter (spawn semantics: never a
fork of a process that may hold JAX threads) with a minimal environment, so
no secret of the parent is in its environment or `/proc/<pid>/environ`,
inside the kernel sandbox of `isolation.py`. It makes itself non-dumpable
(so no program can read its memory or descriptors through /proc), imports
the heavy modules (numpy, sympy, ...) once, then serves programs read as
JSON lines on stdin, answering on stdout.

Per program it forks a short-lived sandboxed child (cheap: the imports are
shared copy-on-write; see sandbox.py), enforces the wall-clock limit, kills
the child's process group, and, being a child subreaper, also kills and
reaps any descendant that escaped the group (a double fork plus `setsid`),
so no process outlives its program.

Prefix snapshots (`ExecutorConfig.prefix_snapshots` > 0): a child whose
program succeeded may stay alive holding its state; a later program that
extends it statement-for-statement (the pool routes it here) is run by a
fork of that snapshot, executing only the new statements. Such a run's
wall-clock limit covers the new statements only.
"""

from __future__ import annotations

import collections
import importlib
import json
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time

from rstar_jax.execution.observation import truncate
from rstar_jax.execution.sandbox import (
    _PR_SET_CHILD_SUBREAPER,
    _PR_SET_DUMPABLE,
    _libc,
    _reseed,
    run_child,
)


def _children() -> list:
    """Pids of this process's live children (including adopted orphans)."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _reap_all(keep=frozenset()) -> None:
    """Kills and reaps every child and adopted descendant except the `keep` pids."""
    for _ in range(200):
        pids = [p for p in _children() if p not in keep]
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


class _Frame:
    """The child's result frame, `b"{err} {n} {kept}\\n"` + n bytes of UTF-8, read from its pipe.

    The program holds the pipe and may write to it itself, so nothing in the
    frame is trusted and memory stays bounded: only the first and the last
    `cap` bytes of the body are kept (all that truncation needs), nothing
    past the announced length is read, and the observation is truncated
    here (and again by the pool) whatever the frame claims.
    """

    def __init__(self, cap: int):
        self.cap, self.n, self.bad, self.size = cap, None, False, 0
        self.line, self.head, self.tail = b"", bytearray(), bytearray()
        self.err = self.kept = False

    def feed(self, data: bytes) -> None:
        if self.n is None:
            self.line += data
            if b"\n" not in self.line:
                self.bad = len(self.line) > 64
                return
            line, data = self.line.split(b"\n", 1)
            try:
                err, n, kept = line.split(b" ")
                self.n = int(n)
                if err not in (b"0", b"1") or kept not in (b"0", b"1") or self.n < 0:
                    raise ValueError(line)
            except ValueError:
                self.bad, self.n = True, None
                return
            self.err, self.kept = err == b"1", kept == b"1"
        data = data[: max(0, self.n - self.size)]
        self.size += len(data)
        if len(self.head) < self.cap:
            self.head += data[: self.cap - len(self.head)]
        self.tail += data[-self.cap:]
        del self.tail[: max(0, len(self.tail) - self.cap)]

    def done(self) -> bool:
        return self.bad or (self.n is not None and self.size >= self.n)

    def result(self, chars: int):
        """The result dict, or None when the frame is malformed or incomplete."""
        if self.bad or self.n is None or self.size != self.n:
            return None
        text = self.head.decode("utf-8", "replace")
        if self.size > self.cap:  # the middle is gone; head and tail hold both ends
            text += self.tail.decode("utf-8", "replace")
        return {"observation": truncate(text, chars), "error": self.err, "snapshot": self.kept}


def _frame_cap(chars: int) -> int:
    """Bytes kept at each end of a frame: a truncated observation, 4 UTF-8 bytes a character."""
    return 4 * (chars + 3)


def _await_result(pid: int, rfd: int, deadline: float, frame: _Frame, first: bytes = b""):
    """Reads the child's frame until it is complete, the child exits, or the deadline.

    Waits on the result pipe and on a pidfd of the child together, so neither
    a crash without a result nor a grandchild holding the pipe open (which
    would delay EOF) costs extra time. Returns timed_out.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        if first:
            frame.feed(first)
        while not frame.done():
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            fds = [rfd] + ([pidfd] if pidfd is not None else [])
            ready, _, _ = select.select(fds, [], [], left if pidfd is not None else min(left, 0.01))
            if rfd in ready:
                data = os.read(rfd, 65536)
                if not data:
                    return False
                frame.feed(data)
                continue
            if pidfd is not None:
                exited = pidfd in ready
            else:  # peek without reaping: the caller reaps and reads the status
                exited = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
            if exited:
                while not frame.done() and select.select([rfd], [], [], 0)[0]:  # what it wrote before dying
                    data = os.read(rfd, 65536)
                    if not data:
                        break
                    frame.feed(data)
                return False
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)


class _Snapshot:
    """A live child holding a finished program's state (see `_serve_snapshot`)."""

    def __init__(self, pid: int, sock: socket.socket, workdir: str):
        self.pid, self.sock, self.workdir = pid, sock, workdir

    def discard(self) -> None:
        self.sock.close()
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        shutil.rmtree(self.workdir, ignore_errors=True)


class Worker:
    """Runs tasks one at a time, keeping up to `prefix_snapshots` snapshots."""

    def __init__(self, base_tmp: str, send, max_snapshots: int):
        self.base_tmp, self.send = base_tmp, send
        self.max_snapshots = max_snapshots
        self.snapshots: collections.OrderedDict[str, _Snapshot] = collections.OrderedDict()

    def close(self) -> None:
        while self.snapshots:
            self.snapshots.popitem()[1].discard()

    def _workdir(self, task: dict) -> str:
        workdir = tempfile.mkdtemp(prefix="p", dir=self.base_tmp)
        os.chmod(workdir, 0o700)
        return workdir

    def _resume_point(self, chain: list):
        """(snapshot key, statements it ran) for the longest kept proper prefix."""
        for n in range(len(chain) - 1, 0, -1):
            if chain[n - 1] in self.snapshots:
                return chain[n - 1], n
        return None, 0

    def _start_resumed(self, task, key, skip, workdir, wfd, cmd_end, rfd, deadline):
        """Asks snapshot `key` to run the task; returns (pid, bytes read after the pid line)."""
        snap = self.snapshots[key]
        self.snapshots.move_to_end(key)
        cmd = {"code": task["code"], "skip": skip, "workdir": workdir, "worker": os.getpid(),
               "keep": bool(task.get("keep")),
               "observation_chars": task["observation_chars"]}
        try:
            socket.send_fds(snap.sock, [json.dumps(cmd).encode()], [wfd, cmd_end.fileno()])
        except OSError:
            return None, b""
        finally:
            os.close(wfd)
            cmd_end.close()
        buf = b""
        while b"\n" not in buf:
            left = min(deadline, time.monotonic() + 5.0) - time.monotonic()
            if left <= 0 or not select.select([rfd], [], [], left)[0]:
                return None, b""
            data = os.read(rfd, 65536)
            if not data:
                return None, b""
            buf += data
        line, rest = buf.split(b"\n", 1)
        if not line.startswith(b"P "):
            return None, b""
        return int(line[2:]), rest

    def run_task(self, task: dict) -> dict:
        """Runs one program (resumed from a snapshot when one holds a prefix)."""
        timeout = float(task["timeout_s"])
        deadline = time.monotonic() + timeout
        chain = task.get("chain") or [] if self.max_snapshots > 0 else []
        key, skip = self._resume_point(chain)
        pid = None
        if key is not None:
            workdir = self._workdir(task)
            rfd, wfd = os.pipe()
            mine, theirs = socket.socketpair()
            pid, first = self._start_resumed(task, key, skip, workdir, wfd, theirs, rfd, deadline)
            if pid is None:  # a broken snapshot: drop it and run from scratch
                os.close(rfd)
                mine.close()
                shutil.rmtree(workdir, ignore_errors=True)
                self.snapshots.pop(key).discard()
                _reap_all(self._kept())
        if pid is None:
            skip, first = 0, b""
            workdir = self._workdir(task)
            rfd, wfd = os.pipe()
            mine, theirs = (socket.socketpair() if chain else (None, None))
            pid = os.fork()
            if pid == 0:
                os.close(rfd)
                run_child(task, workdir, wfd, theirs.fileno() if theirs else -1)
            os.close(wfd)
            if theirs is not None:
                theirs.close()
        self.send({"id": task["id"], "pid": pid})
        return self._collect(task, pid, rfd, first, deadline, workdir, mine, chain, skip)

    def _kept(self) -> frozenset:
        return frozenset(s.pid for s in self.snapshots.values())

    def _collect(self, task, pid, rfd, first, deadline, workdir, mine, chain, skip) -> dict:
        timeout = float(task["timeout_s"])
        chars = int(task["observation_chars"])
        frame, timed_out, status, kept, parsed = _Frame(_frame_cap(chars)), False, None, False, None
        try:
            timed_out = _await_result(pid, rfd, deadline, frame, first)
            parsed = None if timed_out else frame.result(chars)
            kept = bool(parsed and parsed["snapshot"] and mine is not None and task.get("keep") is True)
        finally:
            os.close(rfd)
            if kept:
                self.snapshots[chain[-1]] = _Snapshot(pid, mine, workdir)
                self.snapshots.move_to_end(chain[-1])
                while len(self.snapshots) > self.max_snapshots:
                    self.snapshots.popitem(last=False)[1].discard()
            else:
                if mine is not None:
                    mine.close()
                status, timed_out = _wait_exit(pid, deadline, timed_out)
                shutil.rmtree(workdir, ignore_errors=True)
            _reap_all(self._kept())
        result = parsed if kept else None
        if not kept and not timed_out and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            result = parsed
        if result is None:
            obs = _describe_status(status, timeout, timed_out)
            result = {"observation": obs[: int(task["observation_chars"])], "error": True,
                      "timed_out": timed_out, "crashed": not timed_out}
        return {"id": task["id"], "observation": result["observation"], "error": result["error"],
                "timed_out": result.get("timed_out", False), "crashed": result.get("crashed", False),
                "snapshot": kept, "resumed": skip > 0}


def _wait_exit(pid: int, deadline: float, timed_out: bool):
    """Waits (until the deadline) for a reported or dead child, then kills its group.

    Returns (wait status, timed_out).
    """
    status = None
    if not timed_out:
        while True:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
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
    return status, timed_out


def _warm_up(modules) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001
            print(f"worker: cannot preload {name}: {e}", file=sys.stderr)
    # The first `numpy.random.seed()` in a process pays a lazy initialisation
    # (measured 13-27 ms); every child reseeds, so pay it here once instead of
    # per program (the child still reseeds from fresh OS entropy).
    _reseed()
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
    _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    _libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    _warm_up(config.get("preload_modules", []))
    base_tmp = tempfile.mkdtemp(prefix="rstar_exec_")
    os.chmod(base_tmp, 0o711)
    out = sys.stdout

    def send(obj: dict) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    send({"ready": True, "pid": os.getpid()})
    worker = Worker(base_tmp, send, int(config.get("prefix_snapshots", 0)))
    try:
        for line in sys.stdin:
            task = {**config, **json.loads(line)}
            send(worker.run_task(task))
    finally:
        worker.close()
        _reap_all()
        shutil.rmtree(base_tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
