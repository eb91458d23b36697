"""``rayprune ui``: the MLflow server command for a search directory and the links it prints.

The server reads the directory's own SQLite store and serves its artifacts as a proxy
(``--serve-artifacts --artifacts-destination <search dir>/mlartifacts``): the store records
artifact locations as ``mlflow-artifacts:/...``, which the server resolves under the directory
it is given, so a search directory that was copied or moved opens with its artifacts.  No
MLflow import here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import quote

__all__ = ["ui_server_command", "ui_links"]

#: The runs-table filter that shows the front.
FRONT_FILTER = "tags.pareto = 'true'"


def ui_server_command(search_dir: str | Path, *, host: str = "127.0.0.1", port: int = 5000,
                      workers: int = 1) -> list[str]:
    """The ``mlflow server`` command line that serves ``search_dir``'s store and artifacts."""
    from rayprune.tracking.mlflow_tracker import ARTIFACTS_DIR, default_tracking_uri

    search_dir = Path(search_dir).resolve()
    return [sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", default_tracking_uri(search_dir),
            "--serve-artifacts", "--artifacts-destination", str(search_dir / ARTIFACTS_DIR),
            "--host", host, "--port", str(port), "--workers", str(workers)]


def ui_links(search_dir: str | Path, base_url: str) -> dict[str, str]:
    """Deep links into the UI at ``base_url``: ``runs`` (the experiment's runs table),
    ``front`` (the same filtered to ``tags.pareto = 'true'``) and ``parent`` (the search's run,
    whose description summarises the search), each in the UI's model-training layout
    (:data:`~rayprune.tracking.mlflow_tracker.WORKFLOW_QUERY`); from ``tracking.json``, empty if
    it is missing."""
    from rayprune.tracking.mlflow_tracker import STATE_FILE

    state_file = Path(search_dir) / STATE_FILE
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return {}
    from rayprune.tracking.mlflow_tracker import WORKFLOW_QUERY

    base = base_url.rstrip("/")
    experiment = state.get("experiment_id")
    if experiment is None:
        return {}
    runs = f"{base}/#/experiments/{experiment}/runs"
    links = {"runs": f"{runs}?{WORKFLOW_QUERY}",
             "front": f"{runs}?{WORKFLOW_QUERY}&searchFilter={quote(FRONT_FILTER, safe='')}"}
    if state.get("parent_run_id"):
        links["parent"] = f"{runs}/{state['parent_run_id']}?{WORKFLOW_QUERY}"
    return links
