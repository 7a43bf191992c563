"""What a program's run looks like to the model (spec section 3).

Runs inside the sandboxed child process (see `worker.py`); pure helpers for
the text rules are importable and tested on their own.

The rules, in the order they apply:
1. The program runs from scratch in a fresh module namespace. Python-level
   `sys.stdout` is captured (`sys.stderr` is discarded: warnings are not
   observations); output written straight to file descriptors 1/2 (e.g.
   `os.system`) is not seen, as in the reference.
2. REPL-like: when the last top-level statement is a bare expression, it is
   evaluated after the rest and, unless it is None, its `repr` is written to
   the captured stdout followed by a newline (what `sys.displayhook` does in
   the interactive interpreter), after anything the program printed.
3. The captured text is stripped of surrounding whitespace.
4. Floats are rounded to 4 decimals when that is shorter. Our reading of the
   reference's rule (`print(1/3)` -> `0.3333`): it applies to the TEXT of the
   output, so it covers `print`, f-strings, numpy and sympy reprs alike. Every
   standalone decimal literal `d+.d+` (optionally signed, not part of a longer
   dotted token such as a version `3.10.2` or an identifier, and not in
   scientific notation) is replaced by `repr(round(x, 4))` when that string is
   shorter: `0.3333333333333333` -> `0.3333`, `0.30000000000000004` -> `0.3`,
   `2.50` -> `2.5`, while `0.5`, `3.1416` and `1e-07` stay. Integers are never
   touched. The rule does not apply to exception observations.
5. Output longer than `observation_chars` (1024) keeps the first and last
   half (512 each) joined by `...`; applies to every observation.
6. An exception (any `BaseException`, including `SystemExit` and
   `KeyboardInterrupt`) makes the observation `"{Type}: {message}"`, the last
   line of Python's own traceback: `ZeroDivisionError: division by zero`,
   `NameError: name 'y' is not defined`; a message-less exception is just
   `{Type}` (`raise ValueError` -> `ValueError`); non-builtin types carry
   their module as the traceback does (`numpy.linalg.LinAlgError: ...`).
   Output printed before the exception is dropped, as in the reference.

Capture is volume-capped: only the first and last `max_output_chars // 2`
characters are kept, which is all rules 3-5 need, so a program printing
gigabytes costs time but no memory.
"""

from __future__ import annotations

import ast
import builtins
import collections
import io
import re
import sys
import threading
from typing import Tuple

OBSERVATION_CHARS = 1024
_FLOAT_RE = re.compile(r"(?<![\w.])-?\d+\.\d+(?![\w.])(?![eE][-+]?\d)")


class CappedWriter(io.TextIOBase):
    """A text sink keeping only the first and last `cap // 2` characters.

    Amortised O(1) per write: the tail is a deque of chunks trimmed from the
    left, so a loop of a million small prints or one huge print are both cheap.
    """

    def __init__(self, cap: int):
        self.half = max(1, cap // 2)
        self.head: list = []
        self.head_len = 0
        self.tail: collections.deque = collections.deque()
        self.tail_len = 0

    def writable(self) -> bool:
        return True

    def write(self, s) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        n = len(s)
        if self.head_len < self.half:
            take = s[: self.half - self.head_len]
            self.head.append(take)
            self.head_len += len(take)
            s = s[len(take):]
        if s:
            if len(s) >= self.half:
                self.tail.clear()
                s = s[-self.half:]
                self.tail_len = 0
            self.tail.append(s)
            self.tail_len += len(s)
            while self.tail_len - len(self.tail[0]) >= self.half:
                self.tail_len -= len(self.tail.popleft())
        return n

    def copy(self) -> CappedWriter:
        other = CappedWriter(2 * self.half)
        other.head, other.head_len = list(self.head), self.head_len
        other.tail, other.tail_len = collections.deque(self.tail), self.tail_len
        return other

    def getvalue(self) -> str:
        tail = "".join(self.tail)
        return "".join(self.head) + tail[-self.half:]


def round_floats(text: str) -> str:
    """Rule 4: float literals rounded to 4 decimals when that is shorter."""

    def shorter(m: re.Match) -> str:
        tok = m.group(0)
        try:
            short = repr(round(float(tok), 4))
        except (ValueError, OverflowError):
            return tok
        return short if len(short) < len(tok) else tok

    return _FLOAT_RE.sub(shorter, text)


def truncate(text: str, limit: int = OBSERVATION_CHARS) -> str:
    """Rule 5: first and last `limit // 2` characters around `...`."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + "..." + text[-half:]


def format_exception(exc: BaseException) -> str:
    """Rule 6: `{Type}: {message}`, as the traceback's last line reads."""
    cls = type(exc)
    name = cls.__qualname__
    if cls.__module__ not in ("builtins", "__main__"):
        name = f"{cls.__module__}.{name}"
    if isinstance(exc, SyntaxError):
        msg = exc.msg or ""
    else:
        try:
            msg = str(exc)
        except BaseException:  # noqa: BLE001  (a hostile __str__)
            msg = "<exception str() failed>"
    return f"{name}: {msg}" if msg else name


def format_output(captured: str, limit: int = OBSERVATION_CHARS) -> str:
    """Rules 3-5 on a successful run's captured stdout."""
    return truncate(round_floats(captured.strip()), limit)


def _compile(source: str, skip: int = 0):
    """(body code, last-expression code or None), compiled as `<string>`.

    `skip` leaves out the first top-level statements (already run by a
    snapshot); line numbers stay those of the whole source.
    """
    tree = ast.parse(source, "<string>", "exec")
    del tree.body[:skip]
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    body = compile(tree, "<string>", "exec")
    return body, (compile(last, "<string>", "eval") if last is not None else None)


def _join_threads() -> None:
    """Waits for non-daemon threads, as interpreter shutdown does.

    So a program whose thread never ends runs into the wall-clock timeout,
    exactly as it would in a fresh interpreter, and output its threads print
    before they end is observed.
    """
    main = threading.main_thread()
    while True:
        alive = [t for t in threading.enumerate() if t is not main and not t.daemon and t.is_alive()]
        if not alive:
            return
        for t in alive:
            t.join()


class ProgramState:
    """A program's namespace and captured stdout, resumable with more statements.

    `run(source)` runs a whole program; afterwards, when `resumable`, the same
    state extended by `run(longer_source, skip=n)` (n = statements already
    run) observes exactly what running `longer_source` from scratch would:
    the namespace and the captured output are those the prefix left (the
    prefix's displayed last value is not part of the output, as it is not
    when it is no longer last). Resuming is refused (`resumable` False) after
    an exception, when threads are still alive, or when builtins changed
    (they are restored after every run to protect the reporting code).
    """

    def __init__(self, max_output_chars: int = 1_000_000):
        self.namespace = {"__name__": "__main__", "__builtins__": builtins}
        self.out = CappedWriter(max_output_chars)
        self.err = CappedWriter(1024)
        self.resumable = False

    def run(self, source: str, *, skip: int = 0,
            observation_chars: int = OBSERVATION_CHARS) -> Tuple[str, bool]:
        """Runs `source` minus its first `skip` statements; returns (observation, error)."""
        saved = sys.stdout, sys.stderr
        saved_builtins = dict(builtins.__dict__)  # the program may replace len, print, ...
        self.resumable = False
        shown = None
        sys.stdout, sys.stderr = self.out, self.err
        try:
            body, last = _compile(source, skip)
            exec(body, self.namespace)
            value = eval(last, self.namespace) if last is not None else None
            _join_threads()
            shown = self.out.copy()
            if value is not None:
                shown.write(repr(value))
                shown.write("\n")
        except BaseException as e:  # noqa: BLE001  (every failure is an observation)
            sys.stdout, sys.stderr = saved
            _restore(saved_builtins)
            return truncate(format_exception(e), observation_chars), True
        finally:
            sys.stdout, sys.stderr = saved
            changed = _restore(saved_builtins)
        self.resumable = not changed and threading.active_count() == 1
        return format_output(shown.getvalue(), observation_chars), False


def _restore(saved_builtins: dict) -> bool:
    """Puts builtins back; returns whether the program had changed them.

    Restores first, with dict methods only: until then `len`, `any`, even
    `BaseException` may be whatever the program made them.
    """
    current = builtins.__dict__
    after = current.copy()
    current.clear()
    current.update(saved_builtins)
    try:
        return after != saved_builtins
    except BaseException:  # noqa: BLE001  (a hostile __eq__)
        return True


def run_program(source: str, *, observation_chars: int = OBSERVATION_CHARS,
                max_output_chars: int = 1_000_000) -> Tuple[str, bool]:
    """Runs `source` in a fresh namespace of THIS process; returns (observation, error).

    Meant for a disposable child: the program can change anything in the
    process (modules, builtins, cwd), which is why each program gets its own.
    """
    return ProgramState(max_output_chars).run(source, observation_chars=observation_chars)
