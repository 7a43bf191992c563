"""Small shared helpers: logging, progress bars, atomic files."""

from rstar_jax.utils.logging import progress, setup_logging

__all__ = ["progress", "setup_logging"]
