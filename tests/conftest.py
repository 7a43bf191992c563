"""Shared test set-up: 8 fake CPU devices for mesh tests, paths to shared data."""

import os
import pathlib

# Must happen before JAX initialises its backends.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

from testutil import REPO, SHARED  # noqa: E402


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """`../shared/data`: the team's benchmark sets and rStar fixtures.

    Missing shared data is a broken checkout, so this fails rather than skips.
    """
    path = SHARED / "data"
    if not path.is_dir():
        pytest.fail(f"shared data not found at {path}; the checkout needs ../shared beside it")
    return path
