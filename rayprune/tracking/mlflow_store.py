"""Where a search's MLflow store lives and how a new one is created fast: the default SQLite
URI inside the search directory, the empty-store template, the proxied artifact folder.

Imports mlflow only inside the functions that need it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_tracking_uri", "create_store_in_background", "schema_template", "local_artifact_dir",
           "ARTIFACTS_DIR"]

#: The default store's artifact folder inside the search directory.
ARTIFACTS_DIR = "mlartifacts"


def default_tracking_uri(search_dir: Path) -> str:
    """``sqlite:////abs/path/mlflow.db`` inside the search directory (never relative)."""
    return f"sqlite:///{(Path(search_dir).resolve() / 'mlflow.db').as_posix()}"


def create_store_in_background(tracking_uri: str):
    """Have ``tracking_uri``'s SQLite store ready before the :class:`SearchTracker` opens it.

    A new file gets its schema from a copy of an empty store that an earlier search on this
    machine created with the same MLflow version (:func:`schema_template`, ~0.03 s); without one
    MLflow runs its migrations (~1.1 s alone, ~2.5 s beside ``ray.init`` on 2 cores) in a daemon
    thread, so they overlap the driver's ``ray.init`` and its floor/reference work, and the
    result becomes the template.  Returns the thread (join it before the tracker opens the
    store) or None when nothing runs in the background (a non-SQLite URI, an existing file, a
    copied template).

    Nothing is created in the store but its tables, and a failure here is not reported: the
    tracker opens the same store right after and says what is wrong itself."""
    if not tracking_uri.startswith("sqlite:"):
        return None
    import threading

    db_file = _sqlite_file(tracking_uri)
    template = schema_template()
    if db_file is not None and template is not None and not db_file.exists() and template.is_file():
        try:
            _sqlite_copy(template, db_file)
            return None
        except Exception:  # a damaged template: MLflow creates the schema below
            db_file.unlink(missing_ok=True)

    # The modules are imported here, on the calling thread: two threads importing overlapping
    # modules can see each other's half-initialised ones.  Only the schema work runs beside.
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    import mlflow.tracking  # noqa: F401

    fresh = db_file is not None and not db_file.exists()

    def create() -> None:
        try:
            from mlflow.tracking import MlflowClient

            MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
            if fresh and template is not None and not template.exists():
                template.parent.mkdir(parents=True, exist_ok=True)
                partial = template.with_name(f"{template.name}.{os.getpid()}.tmp")
                _sqlite_copy(db_file, partial)
                os.replace(partial, template)  # atomic: a concurrent search sees all or nothing
        except Exception:  # the tracker reports it (see the docstring); no template then
            pass

    thread = threading.Thread(target=create, name="rayprune-mlflow-store", daemon=True)
    thread.start()
    return thread


def schema_template() -> Path | None:
    """Where the empty SQLite store of this MLflow version is kept for new searches to copy:
    ``$XDG_CACHE_HOME/rayprune`` (default ``~/.cache/rayprune``); ``RAYPRUNE_CACHE_DIR``
    overrides it, and an empty value turns the template off.  Hand-written: MLflow creates
    every new SQLite store by running all of its migrations and has no faster path."""
    import mlflow

    cache = os.environ.get("RAYPRUNE_CACHE_DIR")
    if cache == "":
        return None
    root = Path(cache) if cache else Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "rayprune"
    return root / f"mlflow-{mlflow.__version__}-empty-store.db"


def _sqlite_file(tracking_uri: str) -> Path | None:
    """The file of a ``sqlite:///path`` URI (None for an in-memory or unusual one)."""
    path = tracking_uri.split(":", 1)[1]
    if not path.startswith("///") or path in ("///", "///:memory:"):
        return None
    return Path(path[3:].split("?", 1)[0])


def _sqlite_copy(source: Path, destination: Path) -> None:
    """Copy a SQLite database through SQLite's backup API (consistent even mid-write)."""
    import sqlite3

    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(destination)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def local_artifact_dir(search_dir: str | Path, artifact_location: str, run_id: str | None = None) -> Path:
    """The folder holding an experiment's artifacts (or one run's, with ``run_id``) of a search
    directory's own store: ``<search dir>/mlartifacts/<location path>[/<run id>/artifacts]``.

    The store records them as ``mlflow-artifacts:/<experiment>/...``, which only an MLflow
    server resolves (``rayprune ui``); a Python ``MlflowClient`` on the SQLite file alone cannot
    read them, so code without a server reads the files here.
    """
    root = Path(search_dir) / ARTIFACTS_DIR / artifact_location.split(":", 1)[1].lstrip("/")
    return root / run_id / "artifacts" if run_id else root


def _slug(name: str) -> str:
    """A folder name for an experiment's artifacts (its name, kept to safe characters)."""
    kept = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")
    return kept or "experiment"
