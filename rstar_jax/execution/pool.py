"""`ExecutorPool`: the sandboxed, warm, caching process pool (spec section 3).

Architecture (why each piece exists):
- N warm workers, each a fresh interpreter (`python -m
  rstar_jax.execution.worker`, spawn semantics: never a fork of this process,
  which may hold JAX threads) started with a minimal environment, holding
  numpy / sympy / math-verify imported. Each worker forks one short-lived,
  sandboxed child per program (see worker.py), which gives a clean namespace
  for free and a process group to kill.
- One dispatcher thread per worker in this process feeds it one program at a
  time (from its own queue, then the shared FIFO queue, then by stealing
  from another worker's queue; a program goes to a worker's own queue when
  that worker holds a snapshot of its longest prefix, see
  `ExecutorConfig.prefix_snapshots`), and enforces a second, outer deadline
  (program timeout + grace): a worker that dies or stops answering is killed,
  with its current child's process group, and replaced; its program gets an
  error observation. Nothing here waits without a deadline, so the pool
  never hangs and its owner is never harmed.
- `submit(programs)` is asynchronous (the MCTS driver overlaps execution with
  device work) and returns a future; identical programs are deduplicated
  within and between in-flight batches, and finished results are kept in a
  bounded LRU cache. The key is the program's exact text, hashed (a comment
  can change the output through line numbers). Timeouts and crashes of the
  machinery are not cached.
- Isolation: every worker runs inside the kernel sandbox of `isolation.py`;
  without one the pool refuses to start unless
  `ExecutorConfig.allow_unsandboxed`. Nothing a worker reports is trusted:
  each observation is type-checked and truncated here again.

Line protocol with a worker (JSON lines): first line to the worker is its
static config; it answers `{"ready": true, "pid"}`. Then per program:
`{"id", "code", "timeout_s", "chain", "keep"}` in; `{"id", "pid"}` (the
child, so an unsandboxed pool can kill its group if the worker dies; in the
sandbox it is a pid of the sandbox's namespace and killing bwrap ends them
all) and `{"id", "observation", "error", "timed_out", "crashed"}` out.
"""

from __future__ import annotations

import ast
import atexit
import collections
import hashlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from typing import Dict, List, Optional, Sequence

from rstar_jax.config.loader import check_section, check_value
from rstar_jax.config.schema import ExecutorConfig
from rstar_jax.execution import isolation as iso
from rstar_jax.execution.observation import truncate
from rstar_jax.execution.screen import screen, screening_is_exact
from rstar_jax.execution.seccomp import WORKER_PID, seccomp_program
from rstar_jax.execution.snapshot_policy import may_snapshot
from rstar_jax.execution.types import ExecResult

logger = logging.getLogger(__name__)

_GRACE_S = 10.0  # outer deadline slack over the program timeout (worker overhead)
_START_TIMEOUT_S = 120.0
_STDERR_TAIL = 2000  # characters of a failed worker's stderr quoted in the error


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def program_chain(code: str) -> List[str]:
    """Cumulative keys of a program's top-level statements: `[k(s1), k(s1;s2), ...]`.

    Each is a hash of the statements' `ast.dump`s with their positions (line
    and column numbers: a program can observe them, finding 6), so a
    comment may change them. They name the states a worker may keep as
    snapshots. Empty for a program that does not parse (or has no statement).
    """
    try:
        body = ast.parse(code).body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    chain, key = [], ""
    for stmt in body:
        key = _digest(key + ast.dump(stmt, include_attributes=True))
        chain.append(key)
    return chain


def program_key(code: str) -> str:
    """Cache key of a program: a hash of its exact text.

    Anything in the text can change what the program prints (a comment
    shifts `f_lineno`, finding 6), so nothing is normalised away.
    """
    return _digest(code)


class BatchFuture:
    """Results of one `submit`, in input order; `.result()` blocks."""

    def __init__(self, n: int):
        self._results: List[Optional[ExecResult]] = [None] * n
        self._left = n
        self._lock = threading.Lock()  # several dispatcher threads finish programs at once
        self._event = threading.Event()
        if n == 0:
            self._event.set()

    def _set(self, index: int, result: ExecResult) -> None:
        with self._lock:
            if self._results[index] is not None:
                return
            self._results[index] = result
            self._left -= 1
            finished = self._left == 0
        if finished:
            self._event.set()

    def done(self) -> bool:
        return self._event.is_set()

    def result(self, timeout: Optional[float] = None) -> List[ExecResult]:
        if not self._event.wait(timeout):
            raise TimeoutError("executor batch not finished")
        return list(self._results)


class _Worker:
    """One warm worker process (inside its sandbox) and the pipe protocol to it."""

    def __init__(self, cfg: ExecutorConfig, index: int, sandbox: Optional[iso.Isolation]):
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
               "PYTHONPATH": os.pathsep.join(iso.import_paths()),
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        argv = [sys.executable, "-m", "rstar_jax.execution.worker"]
        self.sandboxed = sandbox is not None
        if sandbox is not None:
            argv = iso.bwrap_args(sandbox.bwrap, cfg.tmp_size_mb, env) + argv
        # The worker's stderr goes to a file we read when it fails to start, so
        # the error says why (finding 8); a file, not a pipe, so it never blocks.
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env,
            cwd="/", start_new_session=True)
        self._buf = b""
        self.child_pid: Optional[int] = None
        preload = list(cfg.preload_modules) + (["rstar_jax.execution.grading", "math_verify"]
                                               if cfg.preload_grading else [])
        forks = sandbox is None or sandbox.forks
        bpf = seccomp_program(forks)[0] if sandbox is not None else None
        static = {"preload_modules": preload,
                  "memory_limit_mb": cfg.memory_limit_mb, "cpu_limit_s": cfg.cpu_limit_s,
                  "file_size_limit_mb": cfg.file_size_limit_mb, "max_processes": cfg.max_processes,
                  "max_output_chars": cfg.max_output_chars, "observation_chars": cfg.observation_chars,
                  "seccomp": bpf.hex() if bpf else None,
                  "prefix_snapshots": cfg.prefix_snapshots if forks else 0}
        try:
            self.send(static)
        except OSError:
            pass
        hello = self.recv(time.monotonic() + _START_TIMEOUT_S)
        if not hello or not hello.get("ready"):
            self.kill()  # first, so everything it wrote is in the file
            raise RuntimeError("executor worker failed to start: " + (self._tail or "no error output"))
        if sandbox is not None and hello.get("pid") != WORKER_PID:  # the pid seccomp protects
            self.kill()
            raise RuntimeError(f"sandboxed worker has pid {hello.get('pid')}, expected {WORKER_PID}")

    def stderr_tail(self) -> str:
        """The end of what the worker wrote to stderr."""
        try:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - 4 * _STDERR_TAIL))
            return self._stderr.read().decode("utf-8", "replace").strip()[-_STDERR_TAIL:]
        except (OSError, ValueError):
            return ""

    def send(self, obj: dict) -> None:
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()

    def recv(self, deadline: float) -> Optional[dict]:
        """The next message, or None on EOF / deadline / garbage."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            data = os.read(fd, 1 << 16)
            if not data:
                return None
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            return None

    def execute(self, task_id: int, code: str, timeout_s: float, chain: List[str],
                keep: bool = False) -> Optional[dict]:
        """Runs one program; None when the worker died or stopped answering.

        `keep`: the program may stay alive as a snapshot (`snapshot_policy`).
        """
        deadline = time.monotonic() + timeout_s + _GRACE_S
        self.child_pid = None
        try:
            self.send({"id": task_id, "code": code, "timeout_s": timeout_s, "chain": chain, "keep": keep})
        except (BrokenPipeError, OSError):
            return None
        while True:
            msg = self.recv(deadline)
            if msg is None or msg.get("id") != task_id:
                return None
            if "pid" in msg and "observation" not in msg:
                self.child_pid = int(msg["pid"])
                continue
            self.child_pid = None
            return msg

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """Kills the worker's group and its current child's group; reaps the worker.

        In the sandbox, killing bwrap (the group leader) ends its PID namespace
        and so every program; the child's pid is then one of that namespace,
        meaningless here, and not used.
        """
        for pgid in ((None if self.sandboxed else self.child_pid), self.proc.pid):
            if pgid:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        try:
            self.proc.kill()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            logger.error("executor worker %d did not die", self.proc.pid)
        self._tail = self.stderr_tail()
        for stream in (self.proc.stdin, self.proc.stdout, self._stderr):
            try:
                stream.close()
            except OSError:
                pass

    def close(self, timeout: float = 5.0) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


_FAILED = "RuntimeError: executor worker died while running the program"
_CLOSED = "RuntimeError: executor closed"


class ExecutorPool:
    """The `Executor` of spec section 3: warm sandboxed workers, dedup, cache.

    Use as a context manager or call `close()`; an `atexit` hook closes pools
    still open at interpreter exit.
    """

    def __init__(self, cfg: Optional[ExecutorConfig] = None, *, timeout_s: Optional[float] = None):
        self.cfg = cfg or ExecutorConfig()
        self.timeout_s = float(timeout_s if timeout_s is not None else self.cfg.timeout_s)
        check_section("executor", self.cfg, timeout_s=self.timeout_s)  # a NaN timeout hangs the pool
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._shared: collections.deque = collections.deque()
        self._owner: collections.OrderedDict = collections.OrderedDict()  # state key -> worker
        self._inflight: Dict[str, list] = {}
        self._cache: collections.OrderedDict[str, ExecResult] = collections.OrderedDict()
        self._stats = collections.Counter()
        self._closed = False
        self._next_id = 0
        self._screening = bool(self.cfg.screen_programs) and screening_is_exact()
        found = iso.probe()
        if not found.ok and not self.cfg.allow_unsandboxed:
            raise RuntimeError(f"refusing to run model code without a sandbox: {found.problem}. "
                               "Set executor.allow_unsandboxed=true to run it unisolated anyway.")
        if not found.ok:
            logger.warning("executor running UNSANDBOXED (executor.allow_unsandboxed): %s", found.problem)
        self._sandbox = found if found.ok else None
        if self._sandbox is not None and not found.forks and self.cfg.prefix_snapshots > 0:
            logger.warning("prefix snapshots off: programs may not fork here (%s)", found.cgroup)
        n = max(1, int(self.cfg.num_workers))
        self._local = [collections.deque() for _ in range(n)]
        self._start_errors: List[str] = []
        # Each worker is started (and restarted) by its own dispatcher thread,
        # which lives as long as the pool: the sandbox dies with the thread
        # that created it (bwrap --die-with-parent uses PR_SET_PDEATHSIG).
        self._workers: List[Optional[_Worker]] = [None] * n
        self._ready = [threading.Event() for _ in range(n)]
        self._threads = [threading.Thread(target=self._serve, args=(i,), daemon=True,
                                          name=f"executor-{i}") for i in range(n)]
        for t in self._threads:
            t.start()
        for e in self._ready:
            e.wait()
        if any(w is None for w in self._workers):
            self.close()
            raise RuntimeError("could not start the executor workers: " + self._start_errors[0])
        self.isolation = "bwrap" if self._sandbox is not None else "none"
        self.filesystem = "private-tmp" if self._sandbox is not None else "shared-tmp"
        self.forks = self._sandbox is None or self._sandbox.forks  # may programs fork?
        _OPEN.add(self)
        logger.info("executor pool: %d workers, network isolation %s", n, self.isolation)

    # ---- public API -------------------------------------------------------

    def submit(self, programs: Sequence[str], *, timeout_s: Optional[float] = None) -> BatchFuture:
        """Starts a batch; results come back in input order (see module doc).

        Programs that do not compile are answered here without running
        (`ExecutorConfig.screen_programs`, see screen.py); they count as
        `screened` in `stats()`.
        """
        if self._closed:
            raise RuntimeError("executor pool is closed")
        timeout = float(timeout_s if timeout_s is not None else self.timeout_s)
        check_value("executor.timeout_s", timeout)
        future = BatchFuture(len(programs))
        items = []
        for code in programs:  # parsing and hashing need no lock
            chain = program_chain(str(code))
            items.append((program_key(str(code)) + f"/{timeout:g}", str(code), chain))
        ready, fresh = [], []
        with self._lock:
            for i, (key, code, chain) in enumerate(items):
                self._stats["programs"] += 1
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
                    self._stats["cache_hits"] += 1
                    ready.append((i, hit))
                elif key in self._inflight:
                    self._stats["dedup_hits"] += 1
                    self._inflight[key].append((future, i))
                else:  # registered now so a concurrent submit deduplicates against it
                    self._inflight[key] = [(future, i)]
                    fresh.append((key, code, timeout, chain))
        for i, res in ready:
            future._set(i, res)
        to_run = []
        for item in fresh:  # compiling (screening) outside the lock
            screened = self._screen(item[1])
            if screened is None:
                to_run.append(item)
            else:
                self._answer(item[0], screened, "screened")
        if to_run:
            with self._lock:
                for item in to_run:
                    self._enqueue(item)
        return future

    def _screen(self, code: str) -> Optional[ExecResult]:
        if not self._screening:
            return None
        return screen(code, observation_chars=self.cfg.observation_chars,
                      max_chars=self.cfg.screen_max_chars)

    def run(self, programs: Sequence[str], *, timeout_s: Optional[float] = None) -> List[ExecResult]:
        """`submit(programs).result()`."""
        return self.submit(programs, timeout_s=timeout_s).result()

    def stats(self) -> Dict[str, int]:
        """Counters: programs, cache_hits, dedup_hits, screened, executed, worker_restarts."""
        with self._lock:
            return dict(self._stats)

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def close(self) -> None:
        """Stops the workers (no process is left behind); pending programs fail."""
        if self._closed:
            return
        self._closed = True
        with self._work:
            self._work.notify_all()
        for t in getattr(self, "_threads", []):
            t.join(timeout=self.timeout_s + _GRACE_S + 5)
        for w in self._workers:
            if w is not None:
                w.close()
        with self._lock:
            pending = list(self._inflight.values())
            self._inflight.clear()
        for waiters in pending:
            for fut, i in waiters:
                fut._set(i, ExecResult(_CLOSED, error=True))
        _OPEN.discard(self)

    def __enter__(self) -> ExecutorPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- internals --------------------------------------------------------

    def _start_slot(self, index: int) -> None:
        try:
            self._workers[index] = _Worker(self.cfg, index, self._sandbox)
        except Exception as e:  # noqa: BLE001
            self._start_errors.append(str(e))
            logger.error("executor worker %d failed to start: %s", index, e)

    def _enqueue(self, item) -> None:
        """Queues a program (lock held), on the worker holding its longest prefix if any.

        Prefix affinity lets that worker resume the prefix's snapshot instead
        of re-running it; idle workers still steal queued work.
        """
        chain = item[3]
        target = None
        for n in range(len(chain) - 1, 0, -1):
            target = self._owner.get(chain[n - 1])
            if target is not None:
                break
        (self._shared if target is None else self._local[target]).append(item)
        self._work.notify()

    def _take(self, index: int):
        """The next item for worker `index`: its own, then shared, then stolen; None at close."""
        with self._work:
            while True:
                if self._closed:
                    return None
                if self._local[index]:
                    return self._local[index].popleft()
                if self._shared:
                    return self._shared.popleft()
                victim = max(self._local, key=len)
                if victim:
                    return victim.pop()
                self._work.wait()

    def _serve(self, index: int) -> None:
        """Starts worker `index`, then runs its dispatcher loop."""
        self._start_slot(index)
        self._ready[index].set()
        if self._workers[index] is None:
            return
        while True:
            item = self._take(index)
            if item is None:
                return
            key, code, timeout, chain = item
            with self._lock:
                self._next_id += 1
                task_id = self._next_id
            msg = None
            keep = bool(chain) and self.cfg.prefix_snapshots > 0 and may_snapshot(code)
            for _attempt in range(2):
                worker = self._workers[index]
                if worker is None or not worker.alive():  # died while idle: not this program's fault
                    self._replace(index)
                    worker = self._workers[index]
                msg = worker.execute(task_id, code, timeout, chain, keep) if worker is not None else None
                if msg is not None or worker is None or worker.child_pid is not None:
                    break
                self._replace(index)  # it died before starting the program: run it on a new one
            if msg is None:
                # Answer first, then restart the worker (seconds of imports).
                self._finish(key, ExecResult(_FAILED, error=True), False)
                self._replace(index)
                continue
            result = self._result(msg)
            if msg.get("snapshot") and chain:
                self._remember_owner(chain[-1], index)
            self._count("resumed", bool(msg.get("resumed")))
            self._finish(key, result, cacheable=not (result.timed_out or msg.get("crashed")))

    def _result(self, msg: dict) -> ExecResult:
        """The worker's answer, checked and truncated here (finding 4: trust nothing)."""
        obs = msg.get("observation")
        if not isinstance(obs, str):
            return ExecResult("RuntimeError: malformed result from the executor worker", error=True)
        return ExecResult(truncate(obs, self.cfg.observation_chars), msg.get("error") is not False,
                          msg.get("timed_out") is True)

    def _remember_owner(self, state_key: str, index: int) -> None:
        with self._lock:
            self._owner[state_key] = index
            self._owner.move_to_end(state_key)
            limit = 4 * max(1, self.cfg.prefix_snapshots) * len(self._local)
            while len(self._owner) > limit:
                self._owner.popitem(last=False)

    def _count(self, name: str, hit: bool) -> None:
        if hit:
            with self._lock:
                self._stats[name] += 1

    def _replace(self, index: int) -> None:
        old = self._workers[index]
        if old is not None:
            old.kill()
        self._workers[index] = None
        with self._lock:
            self._stats["worker_restarts"] += 1
        if self._closed:
            return
        for attempt in range(3):
            try:
                self._workers[index] = _Worker(self.cfg, index, self._sandbox)
                return
            except Exception as e:  # noqa: BLE001
                logger.error("executor worker %d restart %d failed: %s", index, attempt, e)
                time.sleep(0.5)

    def _finish(self, key: str, result: ExecResult, cacheable: bool) -> None:
        self._answer(key, result, "executed", cacheable)

    def _answer(self, key: str, result: ExecResult, counter: str, cacheable: bool = False) -> None:
        """Gives `result` to every batch waiting on `key`; counts it under `counter`."""
        with self._lock:
            self._stats[counter] += 1
            waiters = self._inflight.pop(key, [])
            if cacheable and self.cfg.cache_size > 0:
                self._cache[key] = result
                if len(self._cache) > self.cfg.cache_size:
                    self._cache.popitem(last=False)
        for fut, i in waiters:
            fut._set(i, result)


_OPEN: weakref.WeakSet[ExecutorPool] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for pool in list(_OPEN):
        pool.close()
