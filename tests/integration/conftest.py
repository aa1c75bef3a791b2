"""Fixtures for the integration tests: generated input folders full of edge cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.helpers import write_edge_data


@pytest.fixture
def edge_data(tmp_path: Path) -> Path:
    """A data folder: a big-ish plain log, small logs (one without a trailing newline,
    one empty), a gzip log, and a JSON-lines file."""
    return write_edge_data(tmp_path / "data")
