"""Test doubles you can check by hand, for tests and benchmarks (never used by the library).

`rstar_jax.testing.mock`: an arithmetic mock engine, a fake executor for its
step code, and a mock PPM scorer, so the search driver, the baselines and the
evaluation methods run without a model (tests/search, tests/evaluation,
benchmarks/bench_search.py).
"""
