"""Shared fixtures: where the real MovieLens data lives, tiny synthetic data."""

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _data_dir():
    env = os.environ.get("NPMF_DATA")
    if env:
        return Path(env)
    return REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir():
    """Directory holding ``ml-100k/`` (from ``NPMF_DATA`` or ``../shared/data``)."""
    path = _data_dir()
    if not (path / "ml-100k" / "u.data").is_file():
        pytest.skip(f"MovieLens 100K not found under {path}; set NPMF_DATA")
    return path


@pytest.fixture
def rng():
    """A fresh seeded generator."""
    return np.random.default_rng(0)
