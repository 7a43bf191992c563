"""Registers the `realweights` marker used by the SmolLM2 check (run explicitly)."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "realweights: needs scripts/prepare_smollm2.py to have run (SmolLM2 weights)")
