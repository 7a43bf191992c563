"""Paths and helpers shared by tests (importable: pytest.ini puts tests/ on sys.path)."""

import contextlib
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = (REPO.parent / "shared").resolve()
SHARED_DATA = SHARED / "data"


@contextlib.contextmanager
def count_compiles():
    """Collects one entry per XLA backend compile while the block runs.

    Yields the list, which keeps growing until the block exits (read
    `len(...)` at any point inside it).
    """
    import jax

    compiles = []

    def listener(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiles
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
