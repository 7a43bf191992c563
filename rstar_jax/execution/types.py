"""Frozen contracts of the step-code executor (spec section 3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence


@dataclass(frozen=True)
class ExecResult:
    """The observation of one program, as the model will see it.

    `error` is true when the program raised (the observation then reads
    `"{Type}: {message}"`) or was killed; `timed_out` when it ran past the
    wall-clock limit.
    """

    observation: str
    error: bool = False
    timed_out: bool = False


class ExecFuture(Protocol):
    def done(self) -> bool: ...

    def result(self, timeout: float | None = None) -> list[ExecResult]: ...


class Executor(Protocol):
    """What the search needs from the pool: batches in, results out, async."""

    def submit(self, programs: Sequence[str]) -> ExecFuture:
        """Starts a batch; results come back in input order."""
        ...

    def run(self, programs: Sequence[str]) -> list[ExecResult]:
        """`submit(programs).result()`."""
        ...
