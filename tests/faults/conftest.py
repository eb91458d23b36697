"""Fixtures of the fault tests: one multi-node Ray cluster for the session (see faultlib.py);
the tiny model is ``tiny_dir`` from tests/conftest.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from faultlib import LocalCluster


@pytest.fixture(scope="package")
def cluster(tmp_path_factory):
    """A head plus worker nodes, one CPU each, for the tests in this directory (stopped after
    them).  The nodes get the session's auth token (``tests/conftest.py`` sets it up before
    anything imports Ray), the one the pytest process holds too, so an in-process
    ``run_search`` can attach.  Tests call ``cluster.ensure_workers(n)`` for the nodes they
    need."""
    root = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_health_check_initial_delay_ms": "0",
           "RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "500",
           "RAY_health_check_failure_threshold": "3", "HF_HUB_OFFLINE": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    cluster = LocalCluster(root, env)
    try:
        cluster.start_head()
        yield cluster
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        cluster.stop()
        # Killed nodes leave Ray's pointer to the latest cluster behind; a later address-less
        # `ray.init()` in this process would try to join the dead cluster.
        Path("/tmp/ray/ray_current_cluster").unlink(missing_ok=True)
