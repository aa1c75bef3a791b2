"""Fixtures for every test folder: a real Dask cluster, started once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.dask_cluster import DaskCluster, start_cluster


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """A ``dask scheduler`` and two ``dask worker`` processes that cannot see
    ``cluster.private`` (put configs and output stores there) and share
    ``cluster.shared`` (put inputs there). Workers killed by a test are restarted by their
    nannies; the cluster is stopped, and checked to leave no process, at the end."""
    cluster = start_cluster(tmp_path_factory.mktemp("dask-cluster"))
    yield cluster
    cluster.stop()
