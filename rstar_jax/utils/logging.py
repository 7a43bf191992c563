"""Logging set-up and the progress reporting shared by every long job.

A long stage (pretraining, SFT / PPM training, search, evaluation, and the
evolve stages built on them) reports its progress through `progress()`:

- on a terminal, a tqdm bar that moves per item and stays on screen at
  the end, with the stage's key figure (loss, solved share, accuracy) as
  its postfix;
- anywhere else (a log file, a pod's log, CI), where a bar would print
  nothing useful, a log line every `logging.progress_every_s` seconds:
  done/total, rate, ETA and the key figure, plus one line at the start and
  one at the end.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
import time
from typing import Dict, Optional, Union

from tqdm.auto import tqdm

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"

progress_log = logging.getLogger("rstar_jax.progress")

Figure = Union[int, float, str, None]


class _StderrHandler(logging.StreamHandler):
    """A handler on whatever `sys.stderr` is when a record is written, not the
    stream of the moment it was made: a notebook's or a test's redirected
    stderr comes and goes, and a handler kept on a closed one fails."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass


def setup_logging(level: str = "INFO") -> None:
    """Configures the root logger once with the project's format (stderr)."""
    root = logging.getLogger()
    if not any(getattr(h, "_rstar", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
        handler._rstar = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # Chatty third-party loggers stay at WARNING.
    for name in ("absl", "jax._src", "orbax", "urllib3", "matplotlib"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def format_duration(seconds: float) -> str:
    """`3h04m`, `2m46s`, `12s` (`?` when unknown)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _figure(value: Figure) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Progress:
    """The progress of one stage: a bar on a terminal, log lines elsewhere.

    `update(n, **figures)` counts finished items and records key figures
    (shown as `name=value`); `close()` ends the bar or writes the last line.
    Safe to call from several threads.
    """

    def __init__(self, total: Optional[int], *, desc: str, unit: str = "it", initial: int = 0,
                 enabled: bool = True, every_s: float = 30.0, stream=None):
        stream = sys.stderr if stream is None else stream
        tty = bool(getattr(stream, "isatty", lambda: False)())
        self.total, self.desc, self.unit = total, desc, unit
        self.units = unit if unit.endswith("s") else unit + "s"
        self.n = self.start_n = initial
        self.every_s = every_s
        self.figures: Dict[str, Figure] = {}
        self.lines = enabled and not tty
        self._lock = threading.Lock()
        self._t0 = self._last = time.monotonic()
        self._logged_n = initial
        self._closed = False
        self.bar = (tqdm(total=total, desc=desc, unit=unit, initial=initial, file=stream,
                         dynamic_ncols=True, leave=True) if enabled and tty else None)
        if self.lines:
            resumed = f", {initial} already done" if initial else ""
            progress_log.info("%s: starting, %s %s to do%s", desc,
                              "?" if total is None else total - initial, self.units, resumed)

    def update(self, n: int = 1, **figures: Figure) -> None:
        with self._lock:
            self.n += n
            self.figures.update(figures)
            if self.bar is not None:
                if figures:
                    self.bar.set_postfix({k: _figure(v) for k, v in self.figures.items()},
                                         refresh=False)
                self.bar.update(n)
            if self.lines and time.monotonic() - self._last >= self.every_s:
                self._write()

    def set_postfix(self, **figures: Figure) -> None:
        """Records key figures without counting an item."""
        self.update(0, **figures)

    def elapsed(self) -> float:
        """Seconds since the stage started."""
        return time.monotonic() - self._t0

    def line(self) -> str:
        """The progress line as logged: done/total, rate, ETA, figures."""
        elapsed = max(self.elapsed(), 1e-9)
        rate = (self.n - self.start_n) / elapsed
        parts = []
        if self.total:
            parts.append(f"{self.n}/{self.total} {self.units} ({100.0 * self.n / self.total:.0f}%)")
        else:
            parts.append(f"{self.n} {self.units}")
        parts.append(f"{rate:.3g} {self.units}/s" if rate >= 0.01
                     else f"{rate * 3600:.3g} {self.units}/h")
        if self.total:
            left = self.total - self.n
            parts.append("ETA " + (format_duration(left / rate) if rate > 0 else "?"))
        parts.append("elapsed " + format_duration(elapsed))
        parts += [f"{k}={_figure(v)}" for k, v in self.figures.items() if v is not None]
        return f"{self.desc}: " + ", ".join(parts)

    def _write(self) -> None:
        progress_log.info("%s", self.line())
        self._last = time.monotonic()
        self._logged_n = self.n

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self.bar is not None:
                self.bar.close()
            if self.lines and self.n != self._logged_n:
                self._write()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class MetricsLog:
    """Appends one JSON object per line (a stage's metrics, as training
    writes them); a rerun that resumes appends after the earlier rows."""

    def __init__(self, path: str, enabled: bool = True):
        self.path = path
        self._file = None
        if enabled:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()

    def write(self, row: Dict) -> None:
        if self._file is None:
            return
        with self._lock:
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def progress(
    *,
    total: Optional[int] = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    initial: int = 0,
    every_s: float = 30.0,
) -> Progress:
    """A `Progress` for one stage (`every_s`: `logging.progress_every_s`)."""
    return Progress(total, desc=desc, unit=unit, initial=initial, enabled=enabled, every_s=every_s)
