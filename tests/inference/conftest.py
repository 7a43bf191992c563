"""Fixtures for engine tests: the tiny random policy and PPM, a small BPE tokenizer."""

import pytest
from flax import nnx
from inference.inference_helpers import make_tokenizer, tiny_arch

from rstar_jax.models import PPM, Policy


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def policy():
    return Policy(tiny_arch(), rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def ppm():
    return PPM(tiny_arch(), rngs=nnx.Rngs(1))
