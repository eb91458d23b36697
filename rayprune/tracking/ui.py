"""``rayprune ui``: the MLflow server command for a search directory and the links it prints.

The server reads the directory's own SQLite store and serves its artifacts as a proxy
(``--serve-artifacts --artifacts-destination <search dir>/mlartifacts``): the store records
artifact locations as ``mlflow-artifacts:/...``, which the server resolves under the directory
it is given, so a search directory that was copied or moved opens with its artifacts.  No
MLflow import here.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Mapping
from urllib.parse import quote

__all__ = ["ui_server_command", "ui_server_env", "ui_links", "LEAN_SERVER_ENV"]

#: The runs-table filter that shows the front.
FRONT_FILTER = "tags.pareto = 'true'"

#: What ``rayprune ui`` sets for its server unless the environment sets it already.  MLflow 3.18
#: starts a job runner and nine ``huey_consumer`` processes beside the web server, ~180-240 MB
#: each, for GenAI features (judges, issue detection, trace rollups) that a search's store never
#: uses: without them the UI of a 1 MB store takes 3 processes and 0.54 GB instead of 12 and 2.2 GB
#: (benchmarks/RESULTS.md, "rayprune ui memory").  Telemetry off as for the tracker.
LEAN_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}


def ui_server_command(search_dir: str | Path, *, host: str = "127.0.0.1", port: int = 5000,
                      workers: int = 1) -> list[str]:
    """The ``mlflow server`` command line that serves ``search_dir``'s store and artifacts; one
    web worker (``--workers``, MLflow's default is 4): one person reads one search.  Run it with
    :func:`ui_server_env`."""
    from rayprune.tracking.mlflow_tracker import ARTIFACTS_DIR, default_tracking_uri

    search_dir = Path(search_dir).resolve()
    return [sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", default_tracking_uri(search_dir),
            "--serve-artifacts", "--artifacts-destination", str(search_dir / ARTIFACTS_DIR),
            "--host", host, "--port", str(port), "--workers", str(workers)]


def ui_server_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment to run :func:`ui_server_command` in: ``environ`` (default
    ``os.environ``) with :data:`LEAN_SERVER_ENV` where it does not set those variables itself
    (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true rayprune ui ...`` brings MLflow's job runner back)."""
    env = dict(os.environ if environ is None else environ)
    for key, value in LEAN_SERVER_ENV.items():
        env.setdefault(key, value)
    return env


def ui_links(search_dir: str | Path, base_url: str) -> dict[str, str]:
    """Deep links into the UI at ``base_url``: ``runs`` (the experiment's runs table),
    ``front`` (the same filtered to ``tags.pareto = 'true'``) and ``parent`` (the search's run,
    whose description summarises the search), each in the UI's model-training layout
    (:data:`~rayprune.tracking.summary.WORKFLOW_QUERY`); from ``tracking.json``, empty if it is
    missing.  Where the tracker stored its runs-table views (``views_metric`` in
    ``tracking.json``, :func:`~rayprune.tracking.summary.runs_table_views`), ``runs`` and
    ``front`` open them: the trials as rows with method, target, sparsity, the metric and
    ``retained`` as columns."""
    from rayprune.tracking.mlflow_tracker import STATE_FILE

    state_file = Path(search_dir) / STATE_FILE
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return {}
    from rayprune.tracking.summary import FRONT_VIEW, TRIALS_VIEW, WORKFLOW_QUERY

    base = base_url.rstrip("/")
    experiment = state.get("experiment_id")
    if experiment is None:
        return {}
    runs = f"{base}/#/experiments/{experiment}/runs"
    if state.get("views_metric"):
        links = {"runs": f"{runs}?{WORKFLOW_QUERY}&viewStateShareKey={TRIALS_VIEW}",
                 "front": f"{runs}?{WORKFLOW_QUERY}&viewStateShareKey={FRONT_VIEW}"}
    else:  # a search directory from before the views
        links = {"runs": f"{runs}?{WORKFLOW_QUERY}",
                 "front": f"{runs}?{WORKFLOW_QUERY}&searchFilter={quote(FRONT_FILTER, safe='')}"}
    if state.get("parent_run_id"):
        links["parent"] = f"{runs}/{state['parent_run_id']}?{WORKFLOW_QUERY}"
    return links
