"""A PostgreSQL cluster of a test's own, for tests that stop and restart the server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pg.cluster import Cluster, find_bin


@pytest.fixture
def own_cluster(pg_cluster: Cluster) -> Iterator[Cluster]:
    """A second throwaway cluster (the shared one must not go down under other tests)."""
    bin_dir = find_bin()
    if bin_dir is None:
        pytest.skip("stopping a database needs a cluster of our own: install the server (apt-get install postgresql)")
    cluster = Cluster.start(bin_dir)
    try:
        yield cluster
    finally:
        cluster.stop()
