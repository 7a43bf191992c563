"""JAX's persistent compilation cache, switched on for a long job.

A self-evolution run compiles the same programs again in every stage (the
engine's prefill and decode shapes, the PPM scorer's, the train steps), each
stage building its own jitted functions. With the cache on, a shape compiled
once is loaded from disk by every later stage, by a resumed run after a
preemption, and by the other hosts of a pod that share the directory.
"""

from __future__ import annotations

import logging
import os

import jax

log = logging.getLogger(__name__)


def enable_compile_cache(path: str) -> str:
    """Caches every compiled program under `path` (created); returns it.

    Every compilation is cached, however quick (JAX's default skips those
    under a second, which is most of a small model's).
    """
    path = os.path.abspath(path)
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    log.info("persistent compilation cache: %s", path)
    return path
