"""Shared pytest fixtures: paths to shipped test data and to ../shared (skipped when absent)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
SHARED = REPO_ROOT.parent / "shared"
SHARED_MODELS = SHARED / "models"
SHARED_DATA = SHARED / "data"

# Helpers such as border_reference.py live next to the tests.
sys.path.insert(0, str(TESTS_DIR))


def shared_path(*parts: str) -> Path:
    """Path under ../shared, or skip the test with the reason when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the shared models/data folder next to the repo)")
    return path
