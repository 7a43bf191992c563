"""Paths shared by tests (importable: pytest.ini puts tests/ on sys.path)."""

import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = (REPO.parent / "shared").resolve()
SHARED_DATA = SHARED / "data"
