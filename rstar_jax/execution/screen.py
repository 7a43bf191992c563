"""Host-side screening: answer programs that cannot compile without running them.

A random or early policy writes many programs that are not even Python
(syntax errors, bad indentation, unterminated strings). Sending each one to
the sandboxed pool costs a fork, a pipe round trip and a worker slot
(~15 ms) to learn what compiling it already says. `screen` compiles the
program on the host with the sandbox's own compile step
(`observation._compile`: same parse, same filename, same compiler flags)
and, when that fails with a `SyntaxError` (including `IndentationError` and
`TabError`) or a `ValueError` (null bytes), returns exactly the
`ExecResult` the sandbox reports for it: `ProgramState.run` catches the
same exception before executing anything and formats it with
`format_exception` and `truncate`.

Compiling never runs the program's code, so the rule "model code only runs
in the sandboxed pool" holds. Failures whose outcome may depend on the
process (`RecursionError`, `MemoryError`, `OverflowError`: stack depth,
the sandbox's memory rlimit) and programs longer than `max_chars` are left
to the pool (`screen` returns None), as are programs that compile.
"""

from __future__ import annotations

import sys
import warnings
from typing import Optional

from rstar_jax.execution.observation import OBSERVATION_CHARS, _compile, format_exception, truncate
from rstar_jax.execution.types import ExecResult

# Python's default limit on int literal digits (workers start with a clean
# environment, so they have it); a host that changed it would parse differently.
_DEFAULT_INT_DIGITS = 4300


def screening_is_exact() -> bool:
    """Whether this interpreter compiles exactly as a fresh worker does."""
    get = getattr(sys, "get_int_max_str_digits", None)
    return get is None or get() == _DEFAULT_INT_DIGITS


def screen(code: str, *, observation_chars: int = OBSERVATION_CHARS,
           max_chars: int = 100_000) -> Optional[ExecResult]:
    """The sandbox's result for a program that does not compile, else None.

    Args:
      code: the program's source.
      observation_chars: `ExecutorConfig.observation_chars` (truncation).
      max_chars: longer programs go to the pool unscreened (compiling a huge
        source on the host could cost more than it saves, and the sandbox's
        memory limit might make it fail differently there).

    Returns:
      `ExecResult(observation, error=True)` equal to what the pool returns,
      or None when the program must be run (or screening cannot be sure).
    """
    if len(code) > max_chars:
        return None
    try:
        with warnings.catch_warnings():
            # A worker's filters never turn a SyntaxWarning into an error (no -W,
            # no PYTHONWARNINGS); the host's might. Ignoring also keeps junk
            # programs' warnings out of the host's log.
            warnings.simplefilter("ignore")
            _compile(code)
    except (SyntaxError, ValueError) as e:
        return ExecResult(truncate(format_exception(e), observation_chars), error=True)
    except (RecursionError, MemoryError, OverflowError):
        return None
    return None
