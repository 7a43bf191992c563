"""Logging set-up and progress bars shared by every long job."""

from __future__ import annotations

import logging
import sys
from typing import Iterable, Optional

from tqdm.auto import tqdm

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"


def setup_logging(level: str = "INFO") -> None:
    """Configures the root logger once with the project's format (stderr)."""
    root = logging.getLogger()
    if not any(getattr(h, "_rstar", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
        handler._rstar = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # Chatty third-party loggers stay at WARNING.
    for name in ("absl", "jax._src", "orbax", "urllib3", "matplotlib"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def progress(
    iterable: Optional[Iterable] = None,
    *,
    total: Optional[int] = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    initial: int = 0,
):
    """A tqdm bar that stays quiet when stderr is not a terminal (CI, logs)."""
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        disable=not (enabled and sys.stderr.isatty()),
        dynamic_ncols=True,
        leave=False,
    )
