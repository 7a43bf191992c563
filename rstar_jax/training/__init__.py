"""Training: input pipelines, pure train steps (SFT, PPM pairwise, PQM), the
host loop with Orbax resume, and the `train_policy` / `train_ppm` entry
points used by the self-evolution rounds.

Names are imported lazily so that `rstar-jax --help` (which imports
`rstar_jax.training.commands`) does not load JAX.
"""

import importlib

_EXPORTS = {
    "train": "rstar_jax.training.loop",
    "train_policy": "rstar_jax.training.loop",
    "train_ppm": "rstar_jax.training.loop",
    "NoUsableRecords": "rstar_jax.training.records",
    "load_examples": "rstar_jax.training.records",
    "pair_weight": "rstar_jax.training.records",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rstar_jax.training' has no attribute {name!r}")
