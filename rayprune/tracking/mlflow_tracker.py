"""MLflow tracking: the only module that imports mlflow (lazily).

Trials never open the MLflow store (ECOSYSTEM.md pains 5 and 6): the driver logs everything
through :class:`~rayprune.tracking.callback.MLflowTrackingCallback`, a Ray Tune callback of ours.  Ray's own
``MLflowLoggerCallback`` has no parent-run option and issues one request per metric (pain 16),
so this tracker creates one *parent* run per search and one *child* run per trial (the
``mlflow.parentRunId`` tag, accepted by ``MlflowClient.create_run`` without an ACTIVE check) and
writes with ``log_batch``.

Default store: a SQLite file inside the search directory; artifacts in ``mlartifacts/`` beside
it under a *proxied* location (``mlflow-artifacts:/<experiment>``), which ``rayprune ui`` serves
with ``--artifacts-destination <search dir>/mlartifacts``: the store holds no absolute path, so
a search directory that is copied or moved opens with its artifacts.  ``--tracking-uri`` points
at a server instead (the server decides where artifacts go).

Outages: every write is a *record* (:mod:`rayprune.tracking.journal`).  A record that cannot
reach MLflow (server gone, hung, database locked) is appended to
``<search dir>/tracking_pending.jsonl`` and so is every later one, in order, without waiting on
MLflow again for :attr:`SearchTracker.retry_interval_s`; then the journal is replayed and the
tracker is live again.  :meth:`SearchTracker.finish`, a resumed search and ``rayprune sync``
replay it too.  Records are idempotent, so MLflow ends with every trial exactly once.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from rayprune.errors import SpecError
from rayprune.tracking.base import register_active_tracker
from rayprune.tracking.journal import PendingJournal
from rayprune.tracking.summary import display_params, front_table, row_tags, run_name, search_note
from rayprune.tracking.uris import check_tracking_uri, redact_uri, scrub

__all__ = ["default_tracking_uri", "create_store_in_background", "SearchTracker", "sync_search_dir", "local_artifact_dir", "EXPERIMENT_KIND_TAG", "WORKFLOW_QUERY",
           "EXPERIMENT_KIND", "ARTIFACTS_DIR", "STATE_FILE"]

#: The experiment tag MLflow 3's UI reads to choose an experiment's layout (``mlflow.experimentKind``
#: in the server's JS bundle); ``custom_model_development`` opens on the runs table instead of
#: the GenAI overview (traces, tokens).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: MLflow 3.17's UI ignores that tag for navigation: a global "GenAI | Model training" switch,
#: read from this URL query (else the browser's last choice, else GenAI), picks the layout.  Every
#: link rayprune prints or writes into a note carries it.
WORKFLOW_QUERY = "workflowType=machine_learning"
#: The default store's artifact folder inside the search directory.
ARTIFACTS_DIR = "mlartifacts"
#: The trial -> run map and tracking state inside the search directory.
STATE_FILE = "tracking.json"
#: The per-trial half of the tracker's state: one JSON line per change, appended (see
#: :class:`SearchTracker`), so saving costs the same at trial 1,000 as at trial 1.
TRIALS_FILE = "tracking_trials.jsonl"

# Metrics worth a per-evaluation curve in the UI (few per child, ECOSYSTEM pain 13).  No param
# is logged again as a metric: ``step`` is MLflow's own step, ``target_sparsity`` is a param.
_LOGGED_METRIC_PREFIXES = (
    "sparsity", "scheduled_sparsity", "train_loss", "budget_fraction", "seconds", "retained",
    "latency", "parameters", "method/",
)
_NEVER_METRICS = frozenset({"step", "training_iteration", "target_sparsity"})
# Text a trial reports (``precision``: fp32, bf16 or fp16, what ``training.precision`` resolved
# to on its device): a run tag, set when first reported.  Not a param: params are immutable and
# ``auto`` may resolve differently on the node a retried trial lands on.
_RESULT_TAGS = ("precision",)
# MLflow error codes that replaying cannot fix (a bug, a changed param, a deleted run): such a
# record is reported and dropped instead of blocking the journal forever.
_PERMANENT_ERRORS = frozenset({"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS",
                               "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE", "BAD_REQUEST"})
_PARENT, _REFERENCE = "@parent", "@reference"
_NOTE_TAG = "mlflow.note.content"
_LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"
_FRONT_TABLE = "pareto/front.json"


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


def _now_ms() -> int:
    return int(time.time() * 1000)


def _is_http(uri: str) -> bool:
    return uri.split(":", 1)[0].lower() in ("http", "https")


def _permanent(err: BaseException) -> bool:
    return getattr(err, "error_code", None) in _PERMANENT_ERRORS


def _plain(value: Any) -> Any:
    """A config value as YAML/JSON can hold it (numpy scalars to Python ones)."""
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _result_tags(result: Mapping[str, Any]) -> dict[str, str]:
    """The :data:`_RESULT_TAGS` a result holds as text."""
    return {k: result[k] for k in _RESULT_TAGS if isinstance(result.get(k), str) and result[k]}


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class SearchTracker:
    """Owns the experiment, the parent run, the trial -> child run map and the pending journal.

    The state is saved in the search directory so a resumed search reattaches to its runs
    (ECOSYSTEM pain 7): the search-level part (experiment, parent, reference) in
    ``tracking.json``, rewritten only when it changes; the per-trial part (trial -> run, run
    names, ended trials, the hypervolume history) appended to ``tracking_trials.jsonl`` one change
    per line, because rewriting a map of every trial on each change made a 1,000-trial search's
    saves quadratic.  Credentials of the tracking URI are never written to either.
    """

    #: Seconds between attempts to reach MLflow again while it is unreachable.
    retry_interval_s: float = 30.0

    def __init__(self, tracking_uri: str, experiment: str, search_dir: Path, *,
                 tags: Mapping[str, str] | None = None, metric_names: set[str] = frozenset(),
                 log: Callable[[str], None] | None = None):
        # What a restored callback needs to rebuild this tracker (see MLflowTrackingCallback);
        # Ray pickles it into the search directory, so the URI is kept without credentials.
        self.init_args = {"tracking_uri": redact_uri(tracking_uri), "experiment": experiment,
                          "search_dir": str(search_dir), "tags": dict(tags or {}),
                          "metric_names": sorted(metric_names)}
        self._open(tracking_uri, Path(search_dir), metric_names, log)
        self.experiment_name = self._state.get("experiment_name", experiment)
        if self.parent_run_id is not None:  # a resumed search: pending records first, then the parent runs again
            self.flush()
            self._submit({"op": "status", "run": _PARENT, "status": "RUNNING"})
        else:
            self._create_experiment_and_parent(experiment, tags or {})
        self._save()
        register_active_tracker(search_dir, self)

    @classmethod
    def attach(cls, search_dir: Path, tracking_uri: str, *, log: Callable[[str], None] | None = None) -> "SearchTracker":
        """The tracker of an existing search directory, for replaying its journal: it changes no
        run's status by itself (``rayprune sync``)."""
        self = cls.__new__(cls)
        self.init_args = {"tracking_uri": redact_uri(tracking_uri), "experiment": "", "search_dir": str(search_dir),
                          "tags": {}, "metric_names": []}
        self._open(tracking_uri, Path(search_dir), set(), log)
        if self.parent_run_id is None:
            raise SpecError(f"{search_dir}/{STATE_FILE}: no parent run recorded; nothing to sync")
        self.experiment_name = self._state.get("experiment_name", "")
        return self

    def _open(self, tracking_uri: str, search_dir: Path, metric_names, log) -> None:
        from mlflow.tracking import MlflowClient

        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        # MLflow prints "View run <name> at: <tracking URI>/..." when a run ends: one line per
        # trial in the CLI's output, with the URI's credentials in it.
        if redact_uri(tracking_uri) != tracking_uri:
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        else:
            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        self.tracking_uri = tracking_uri
        self.search_dir = search_dir
        self.metric_names = set(metric_names)  # per-evaluation curves logged besides the prefixes
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.journal = PendingJournal(search_dir)
        self._log = log or _stderr
        self._state_file = search_dir / STATE_FILE
        self._trials_file = search_dir / TRIALS_FILE
        state = json.loads(self._state_file.read_text()) if self._state_file.exists() else {}
        self._state = state
        self._saved_header: str | None = None
        self.default_store = tracking_uri == default_tracking_uri(search_dir)
        self.experiment_id: str | None = state.get("experiment_id")
        self.artifact_location: str | None = state.get("artifact_location")
        self.parent_run_id: str | None = state.get("parent_run_id")
        self.reference_run_id: str | None = state.get("reference_run_id")
        self.child_runs: dict[str, str] = dict(state.get("child_runs", {}))
        self.run_names: dict[str, str] = dict(state.get("run_names", {}))
        # Trials that finished, stopped early or failed, in this search or before a resume.
        self.ended_trials: set[str] = set(state.get("ended_trials", []))
        # The hypervolume logged per step (trials ended), so a repeated front is not logged twice.
        self._hypervolume: dict[int, float] = {int(k): v for k, v in state.get("hypervolume", {}).items()}
        self._reference: dict = dict(state.get("reference", {}))
        self._load_trial_changes()
        # Set when the experiment ends: trials cut off by an interruption, and how many there were.
        self.unfinished_trials: list[str] = []
        self.trials_seen = 0
        #: Called by the Ray callback after every trial that ends (see MLflowTrackingCallback).
        self.on_trial_end: Callable[[list], None] | None = None
        self._param_keys: dict[str, set[str]] = {}
        self._sent_tags: dict[str, dict[str, str]] = {}
        self._pending_creates: set[str] = set()
        self._offline_since: float | None = None
        self._warned_permanent: set[str] = set()
        self.synced_records = 0

    def _create_experiment_and_parent(self, experiment: str, tags: Mapping[str, str]) -> None:
        """First start of a search: the experiment and the parent run must exist before any
        trial, so these calls go to MLflow directly (the preflight checked it answers)."""
        try:
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                location = None
                if not _is_http(self.tracking_uri) and self.default_store:
                    location = f"mlflow-artifacts:/{_slug(experiment)}"
                try:
                    self.experiment_id = self.client.create_experiment(
                        experiment, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
                except Exception:  # created concurrently by another search: use it
                    self.experiment_id = self.client.get_experiment_by_name(experiment).experiment_id
                exp = self.client.get_experiment(self.experiment_id)
            self.experiment_id = exp.experiment_id
            self.artifact_location = exp.artifact_location
            if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
                self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            run = self.client.create_run(
                self.experiment_id, run_name=f"search-{self.search_dir.name}",
                tags={"rayprune.role": "search", **tags})
        except SpecError:
            raise
        except Exception as err:
            raise SpecError(f"MLflow at {redact_uri(self.tracking_uri)}: cannot create the search's experiment "
                            f"and parent run: {scrub(str(err), self.tracking_uri)[:300]}") from None
        self.parent_run_id = run.info.run_id
        self._state["experiment_name"] = experiment

    def _save(self) -> None:
        """Rewrite ``tracking.json`` if the search-level state changed (a few hundred bytes,
        independent of the number of trials)."""
        state = {
            "tracking_uri": redact_uri(self.tracking_uri),
            "default_store": self.default_store,
            "experiment_id": self.experiment_id,
            "experiment_name": self._state.get("experiment_name", getattr(self, "experiment_name", "")),
            "artifact_location": self.artifact_location,
            "parent_run_id": self.parent_run_id,
            "reference_run_id": self.reference_run_id,
            "reference": self._reference,
            "trials_file": TRIALS_FILE,
        }
        text = json.dumps(state, indent=1)
        if text == self._saved_header:
            return
        tmp = self._state_file.with_suffix(".json.tmp")
        tmp.write_text(text)
        os.replace(tmp, self._state_file)
        self._saved_header = text

    def _record_trial_change(self, change: dict) -> None:
        """Append one per-trial change to ``tracking_trials.jsonl`` (flushed, not fsynced: like
        the ``os.replace`` it replaces, it survives a killed driver, not a lost machine)."""
        with open(self._trials_file, "a") as fh:
            fh.write(json.dumps(change) + "\n")

    def _load_trial_changes(self) -> None:
        """Replay ``tracking_trials.jsonl`` over the state read from ``tracking.json`` (which
        held the whole map in search directories written before the split); a line cut off by
        a killed driver is skipped."""
        if not self._trials_file.exists():
            if any(self._state.get(k) for k in ("child_runs", "run_names", "ended_trials", "hypervolume")):
                # An older search directory: move its map into the trials file before the next
                # save rewrites tracking.json without it.
                for trial_id, run_id in self.child_runs.items():
                    self._record_trial_change({"child": trial_id, "run": run_id})
                for trial_id, name in self.run_names.items():
                    self._record_trial_change({"named": trial_id, "name": name})
                for trial_id in sorted(self.ended_trials):
                    self._record_trial_change({"ended": trial_id})
                for step, value in sorted(self._hypervolume.items()):
                    self._record_trial_change({"hypervolume_step": step, "value": value})
            return
        for line in self._trials_file.read_text().splitlines():
            try:
                change = json.loads(line)
            except ValueError:
                continue
            if "child" in change:
                self.child_runs[change["child"]] = change["run"]
            elif "named" in change:
                self.run_names[change["named"]] = change["name"]
            elif "ended" in change:
                self.ended_trials.add(change["ended"])
            elif "hypervolume_step" in change:
                self._hypervolume[int(change["hypervolume_step"])] = float(change["value"])

    # -------------------------------------------------------------------- records
    @property
    def online(self) -> bool:
        """False while MLflow is unreachable and records go to the journal."""
        return self._offline_since is None

    @property
    def pending_records(self) -> int:
        """How many records wait in the journal."""
        return len(self.journal)

    def _submit(self, record: dict) -> None:
        if self._offline_since is not None:
            if time.monotonic() - self._offline_since < self.retry_interval_s or not self.flush():
                self.journal.append(record)
                return
        try:
            self._apply(record)
        except Exception as err:
            if self._drop_if_permanent(record, err):
                return
            self._go_offline(err)
            self.journal.append(record)

    def _drop_if_permanent(self, record: dict, err: BaseException) -> bool:
        if not _permanent(err):
            return False
        if record["op"] not in self._warned_permanent:
            self._warned_permanent.add(record["op"])
            self._log(f"warning: MLflow rejected a {record['op']!r} record for {record.get('run') or record.get('key')}"
                      f" ({getattr(err, 'error_code', '')}): {scrub(str(err), self.tracking_uri)[:200]}")
        return True

    def _go_offline(self, err: BaseException) -> None:
        first = self._offline_since is None
        self._offline_since = time.monotonic()
        if first:
            self._log(f"warning: MLflow at {redact_uri(self.tracking_uri)} is not answering "
                      f"({scrub(str(err), self.tracking_uri)[:200]}); the search goes on and keeps what it "
                      f"could not log in {self.journal.path} (retried every {self.retry_interval_s:g} s, "
                      f"at the end, on --resume, or with `rayprune sync {self.search_dir}`)")

    def flush(self) -> bool:
        """Replay the journal into MLflow; True when nothing is pending afterwards.

        Called when MLflow was unreachable and the retry interval has passed, by :meth:`finish`,
        when a search resumes, and by ``rayprune sync``.  A record MLflow rejects for good is
        reported and dropped; on the first record it cannot reach MLflow for, the rest stays in
        the journal (a later replay starts from its beginning again: records are idempotent).
        """
        records = self.journal.records()
        if not records:
            self._offline_since = None
            return True
        for record in records:
            try:
                self._apply(record)
            except Exception as err:
                if self._drop_if_permanent(record, err):
                    continue
                self._go_offline(err)
                return False
        self.journal.clear()
        was_offline = self._offline_since is not None
        self._offline_since = None
        self.synced_records += len(records)
        if was_offline:
            self._log(f"MLflow at {redact_uri(self.tracking_uri)} answers again: {len(records)} pending "
                      f"tracking records synced")
        return True

    def _run_id(self, key: str) -> str | None:
        if key == _PARENT:
            return self.parent_run_id
        if key == _REFERENCE:
            return self.reference_run_id
        return self.child_runs.get(key)

    def _apply(self, record: dict) -> None:
        """Send one record to MLflow (raises what MLflow raises)."""
        from mlflow.entities import Metric, Param, RunTag

        op = record["op"]
        if op == "create_run":
            self._apply_create_run(record)
            return
        if op == "experiment_tag":
            self.client.set_experiment_tag(self.experiment_id, record["key"], record["value"])
            return
        run_id = self._run_id(record["run"])
        if run_id is None:
            return
        if op == "status":
            self.client.update_run(run_id, status=record["status"])
        elif op == "reopen":
            self.client.update_run(run_id, status="RUNNING")
            if self.client.get_run(run_id).data.tags.get("interrupted"):
                self.client.delete_tag(run_id, "interrupted")
                self.client.set_tag(run_id, "resumed", "true")
        elif op == "batch":
            metrics = [Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in record.get("metrics", [])]
            params = [Param(k, v) for k, v in record.get("params", {}).items()]
            tags = [RunTag(k, v) for k, v in record.get("tags", {}).items()]
            for i in range(0, len(metrics), 1000):
                self.client.log_batch(run_id, metrics=metrics[i: i + 1000])
            entities = params + tags  # at most 100 params and tags per call
            for i in range(0, len(entities), 100):
                chunk = entities[i: i + 100]
                self.client.log_batch(run_id, params=[e for e in chunk if isinstance(e, Param)],
                                      tags=[e for e in chunk if isinstance(e, RunTag)])
        elif op == "terminate":
            self.client.set_terminated(run_id, status=record["status"], end_time=record.get("end_time"))
        elif op == "artifact":
            self._upload(run_id, record)
        else:
            raise ValueError(f"unknown tracking record {op!r}")

    def _apply_create_run(self, record: dict) -> None:
        """Create a child run unless one exists for this trial: in the map, or in MLflow under
        this parent (a create whose answer was lost in an outage) -- never a second run."""
        key = record["key"]
        slot = _REFERENCE if record.get("role") == "reference" else key
        run_id = self._run_id(slot)
        if run_id is None:
            found = self.client.search_runs(
                [self.experiment_id], max_results=1,
                filter_string=(f"tags.`rayprune.trial_id` = '{key}' and "
                               f"tags.`mlflow.parentRunId` = '{self.parent_run_id}'"))
            if found:
                run_id = found[0].info.run_id
            else:
                run_id = self.client.create_run(
                    self.experiment_id, start_time=record.get("start_time"), run_name=record["name"],
                    tags={"mlflow.parentRunId": self.parent_run_id, "rayprune.trial_id": key, **record["tags"]},
                ).info.run_id
        if slot == _REFERENCE:
            self.reference_run_id = run_id
        else:
            self.child_runs[key] = run_id
            self._record_trial_change({"child": key, "run": run_id})
        self._pending_creates.discard(key)
        self._save()
        if record.get("params"):
            self._apply({"op": "batch", "run": slot, "params": record["params"]})
        if record.get("config_yaml") is not None:
            self._upload(run_id, {"name": "config.yaml", "text": record["config_yaml"]})

    def _upload(self, run_id: str, record: dict) -> None:
        """Put one file into a run's artifacts: ``record`` has ``path`` (a file, relative to the
        search directory when inside it; skipped if gone) or ``name`` + ``text``, and an optional
        ``artifact_path`` folder."""
        folder = record.get("artifact_path") or ""
        with tempfile.TemporaryDirectory() as tmp:
            if "text" in record:
                source = Path(tmp) / record["name"]
                source.write_text(record["text"])
            else:
                source = Path(record["path"])
                if not source.is_absolute():
                    source = self.search_dir / source
                if not source.exists():
                    return
            local_root = self._local_artifact_root()
            if local_root is None:
                self.client.log_artifact(run_id, str(source), artifact_path=folder or None)
            else:
                target = local_root / run_id / "artifacts" / folder
                target.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target / source.name)

    def _local_artifact_root(self) -> Path | None:
        """Where a proxied (``mlflow-artifacts:``) location lives on disk when no server stands
        between this process and the store (see :func:`local_artifact_dir`).  None when the
        MLflow client can upload itself (a server, or a plain ``file:``/bucket location)."""
        if _is_http(self.tracking_uri) or not (self.artifact_location or "").startswith("mlflow-artifacts:"):
            return None
        return local_artifact_dir(self.search_dir, self.artifact_location)

    def _send_tags(self, key: str, tags: Mapping[str, str]) -> None:
        """Tags that changed since last sent (a live front refresh re-tags only what moved)."""
        sent = self._sent_tags.setdefault(key, {})
        changed = {k: v for k, v in tags.items() if sent.get(k) != v}
        if changed:
            sent.update(changed)
            self._submit({"op": "batch", "run": key, "tags": changed})

    def _known(self, trial_id: str) -> bool:
        return trial_id in self.child_runs or trial_id in self._pending_creates

    def _link(self, run_id: str | None) -> str | None:
        return f"#/experiments/{self.experiment_id}/runs/{run_id}?{WORKFLOW_QUERY}" if run_id else None

    # -------------------------------------------------------------------- children
    def start_trial(self, trial_id: str, config: Mapping[str, Any]) -> str | None:
        """Create the trial's child run (``<method>-s<target>-<id>``, rounded params, its
        ``config.yaml``), or set its existing run RUNNING again when the trial resumes."""
        import yaml

        self._param_keys[trial_id] = {str(k) for k in config}
        if self._known(trial_id):  # resumed trial: same run, params already logged
            self._submit({"op": "reopen", "run": trial_id})
            return self.child_runs.get(trial_id)
        name = run_name(trial_id, config)
        self.run_names[trial_id] = name
        self._record_trial_change({"named": trial_id, "name": name})
        self._pending_creates.add(trial_id)
        plain = {str(k): _plain(v) for k, v in sorted(config.items())}
        self._submit({
            "op": "create_run", "key": trial_id, "name": name, "start_time": _now_ms(),
            "tags": {"rayprune.role": "trial", "method": str(config.get("method"))},
            "params": display_params(config), "config_yaml": yaml.safe_dump(plain, sort_keys=True),
        })
        return self.child_runs.get(trial_id)

    def log_result(self, trial_id: str, result: Mapping[str, Any], step: int) -> None:
        if not self._known(trial_id):
            return
        tags = _result_tags(result)
        if tags:  # sent once: _send_tags skips a tag whose value it already sent
            self._send_tags(trial_id, tags)
        skip = _NEVER_METRICS | set(_RESULT_TAGS) | self._param_keys.get(trial_id, set())
        now = _now_ms()
        metrics = [
            [k, float(v), now, int(step)]
            for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
            and k not in skip and (k in self.metric_names or k.startswith(_LOGGED_METRIC_PREFIXES))
        ]
        if metrics:
            self._submit({"op": "batch", "run": trial_id, "metrics": metrics})

    def end_trial(self, trial_id: str, status: str, tags: Mapping[str, str] | None = None) -> None:
        """Mark the trial's run ended (``FINISHED``, ``KILLED`` or ``FAILED``) with ``tags``;
        a trial that ends is ``pareto=false`` until a front says otherwise."""
        if not self._known(trial_id):
            return
        tags = dict(tags or {})
        if status != "KILLED" or not tags.get("interrupted"):
            if trial_id not in self.ended_trials:
                self.ended_trials.add(trial_id)
                self._record_trial_change({"ended": trial_id})
            if "pareto" not in self._sent_tags.get(trial_id, {}):
                tags.setdefault("pareto", "false")
        if tags:
            self._send_tags(trial_id, {k: str(v) for k, v in tags.items()})
        self._submit({"op": "terminate", "run": trial_id, "status": status, "end_time": _now_ms()})

    # -------------------------------------------------------------------- parent
    def log_search_params(self, params: Mapping[str, Any]) -> None:
        self._submit({"op": "batch", "run": _PARENT, "params": display_params(params)})

    def log_reference(self, metrics: Mapping[str, Any] | None, *, metric: str, floor: float | None = None,
                      info: Mapping[str, Any] | None = None, criteria: Mapping[str, Any] | None = None) -> None:
        """Record the dense reference and the floor; called once per driver start, before trials.

        The reference becomes a child run tagged ``role=reference`` (created once per search,
        also across resumes) with its scores, and the parent gets ``reference_<name>`` for each
        score and ``floor_<metric>``; the parent's note shows them from then on.

        Args:
            metrics: the reference's evaluation (``{"accuracy": 0.91, ...}``), or None for
                ``reference: none``; finite numbers are logged.
            metric: the search's objective metric.
            floor: the best constant predictor's ``metric`` on the eval split.
            info: what the reference is: ``reference`` (its path or hub id, or ``"none"``),
                ``reference_trained`` (False: a user-given model, only evaluated),
                ``reference_steps``.
            criteria: the front's criteria (``Criteria.describe()``: ``constraints``,
                ``min_metric``, ``min_retained``) for the note; default: ``search.json``'s.
        """
        info = dict(info or {})
        numbers = {k: float(v) for k, v in (metrics or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
        known = dict(self._reference)
        self._reference.update({"metric": metric, "value": numbers.get(metric) if metrics else None,
                                "model": info.get("reference") if metrics else None})
        if floor is not None:
            self._reference["floor"] = float(floor)
        if criteria is not None:
            self._reference["criteria"] = dict(criteria)
        now = _now_ms()
        parent_metrics = []
        if floor is not None and known.get("floor") != float(floor):
            parent_metrics.append([f"floor_{metric}", float(floor), now, 0])
        if metrics and self.reference_run_id is None and _REFERENCE not in self._pending_creates:
            self._pending_creates.add(_REFERENCE)
            self._submit({
                "op": "create_run", "key": "reference", "role": "reference", "name": "reference-dense",
                "start_time": now, "tags": {"rayprune.role": "reference", "role": "reference",
                                            **_result_tags(metrics)},
                "params": display_params({"model": info.get("reference", ""), "trained": info.get("reference_trained"),
                                          "steps": info.get("reference_steps")}),
            })
            self._submit({"op": "batch", "run": _REFERENCE, "metrics": [[k, v, now, 0] for k, v in numbers.items()]})
            self._submit({"op": "terminate", "run": _REFERENCE, "status": "FINISHED", "end_time": now})
            parent_metrics += [[f"reference_{k}", v, now, 0] for k, v in numbers.items()]
        if parent_metrics:
            self._submit({"op": "batch", "run": _PARENT, "metrics": parent_metrics})
        self._save()

    def log_pareto(self, front_rows: list[dict], all_rows: list[dict], *, metric: str, hypervolume: float,
                   figure_png: Path | None = None, figure_html: Path | None = None, table_csv: Path | None = None,
                   reference_value: float | None = None, reference_model: str | None = None,
                   floor: float | None = None, constraints: Mapping[str, Any] | None = None,
                   hypervolume_reference: Sequence[float] | None = None) -> None:
        """Log the current front; called whenever the front is written: after every trial that
        ends (live) and once when the search ends.

        Args:
            front_rows: the front's results rows (results-row contract), sorted as to be shown.
            all_rows: every trial's row so far -- complete, stopped, failed, collapsed -- so that
                every run gets ``pareto``, ``collapsed``, ``stopped_early`` and
                ``verdict``/``verdict_reason`` tags and the note counts them.
            metric: the objective metric (the column of the rows).
            hypervolume: the front's hypervolume, logged as ``pareto_hypervolume`` at step =
                trials ended so far (one point per ended trial; the same value at the same step
                is not logged again).
            figure_png / figure_html / table_csv: files put under the parent's ``pareto/``
                (``results.csv`` of the search directory goes there too).
            reference_value / reference_model: the dense reference's metric and what it is
                (default: what :meth:`log_reference` recorded).
            floor: the best constant predictor's metric; logged as ``floor_<metric>``.
            constraints: ``objective.constraints`` (``None`` values are unset ones).
            hypervolume_reference: the hypervolume's reference point, stated in the note.

        The parent also gets the front as a table artifact (``pareto/front.json``, MLflow's
        ``log_table`` layout, replaced on each call where ``log_table`` would append) and its
        note (``mlflow.note.content``) rewritten by :func:`~rayprune.tracking.summary.search_note`.
        """
        now = _now_ms()
        step = len(self.ended_trials)
        metrics = []
        if self._hypervolume.get(step) != float(hypervolume):
            self._hypervolume[step] = float(hypervolume)
            self._record_trial_change({"hypervolume_step": step, "value": float(hypervolume)})
            metrics += [["pareto_hypervolume", float(hypervolume), now, step],
                        ["pareto_size", float(len(front_rows)), now, step],
                        ["trials_finished", float(step), now, step]]
        if floor is not None and self._reference.get("floor") != float(floor):
            self._reference["floor"] = float(floor)
            metrics.append([f"floor_{metric}", float(floor), now, 0])
        floor = self._reference.get("floor") if floor is None else floor
        if metrics:
            self._submit({"op": "batch", "run": _PARENT, "metrics": metrics})
        self._save()
        results_csv = self.search_dir / "results.csv"
        for path in (table_csv, figure_png, figure_html, results_csv):
            if path is not None and Path(path).exists():
                self._submit({"op": "artifact", "run": _PARENT, "path": self._relative(path), "artifact_path": "pareto"})
        table = front_table(front_rows, metric, self.run_names)
        self._submit({"op": "artifact", "run": _PARENT, "name": "front.json", "text": json.dumps(table),
                      "artifact_path": "pareto"})
        front_ids = {r["trial_id"] for r in front_rows}
        for row in all_rows:
            if self._known(row["trial_id"]):
                self._send_tags(row["trial_id"], row_tags(row, front_ids))
        if reference_value is None:
            reference_value = self._reference.get("value")
            reference_model = reference_model or self._reference.get("model")
        if constraints is None:
            constraints = self._criteria().get("constraints")
        if hypervolume_reference is None and floor is not None:
            hypervolume_reference = [floor, 0.0]
        note = search_note(
            name=self.experiment_name or self.search_dir.name, metric=metric, front_rows=front_rows,
            all_rows=all_rows, hypervolume=hypervolume,
            run_links={t: self._link(r) for t, r in self.child_runs.items()}, run_names=self.run_names,
            reference_value=reference_value, reference_model=reference_model,
            reference_link=self._link(self.reference_run_id), floor=floor, constraints=constraints,
            hypervolume_reference=hypervolume_reference, running=self.trials_seen == 0)
        self._send_tags(_PARENT, {_NOTE_TAG: note,
                                  _LOGGED_ARTIFACTS_TAG: json.dumps([{"path": _FRONT_TABLE, "type": "table"}])})

    def _criteria(self) -> dict:
        """The front's criteria as :meth:`log_reference` got them, else as ``search.json`` has them."""
        if "criteria" in self._reference:
            return self._reference["criteria"]
        try:
            return dict(json.loads((self.search_dir / "search.json").read_text()).get("criteria") or {})
        except (OSError, ValueError):
            return {}

    def _relative(self, path) -> str:
        path = Path(path)
        try:
            return str(path.resolve().relative_to(self.search_dir.resolve()))
        except ValueError:
            return str(path)

    def adopt_remote_progress(self) -> None:
        """Under Ray Client (``--address ray://``) Tune's controller, and with it the tracking
        callback and a copy of this tracker, runs on the head node: that copy creates and ends
        the trials' runs and appends them to the search directory's ``tracking_trials.jsonl``
        (``--output`` must be visible to the head, docs/cluster.md).  Read them back so this
        driver-side tracker ends the search knowing every trial's run: the front's tags reach
        them and a search whose trials all ended is not taken for an interrupted one."""
        self._load_trial_changes()
        self.trials_seen = max(self.trials_seen, len(self.child_runs))
        self.unfinished_trials = sorted(set(self.child_runs) - self.ended_trials)

    def finish(self, status: str = "FINISHED") -> int:
        """End the parent run and replay whatever is pending; return how many records are still
        pending (0 unless MLflow is unreachable now: ``rayprune sync`` sends them later)."""
        self._submit({"op": "terminate", "run": _PARENT, "status": status, "end_time": _now_ms()})
        self.flush()
        pending = self.pending_records
        if pending:
            self._log(f"warning: {pending} tracking records could not reach MLflow at "
                      f"{redact_uri(self.tracking_uri)}; they are kept in {self.journal.path}: run "
                      f"`rayprune sync {self.search_dir}` when it is back")
        return pending


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


def sync_search_dir(search_dir: str | Path, tracking_uri: str | None = None, *,
                    log: Callable[[str], None] | None = None) -> tuple[int, int]:
    """Replay ``<search dir>/tracking_pending.jsonl`` into MLflow (``rayprune sync``).

    Args:
        search_dir: a search directory with a ``tracking.json``.
        tracking_uri: the tracking URI to replay into; default: the search directory's own
            store, or the server recorded in ``tracking.json`` (which holds no credentials:
            pass the URI again, or set ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``/``_TOKEN``).

    Returns:
        (records sent, records still pending).

    Raises:
        SpecError: not a tracked search directory, or the tracking URI does not answer.
    """
    search_dir = Path(search_dir).resolve()
    state_file = search_dir / STATE_FILE
    if not state_file.exists():
        raise SpecError(f"{search_dir}: no {STATE_FILE} (not a search directory, or nothing was tracked)")
    state = json.loads(state_file.read_text())
    if tracking_uri is None:
        tracking_uri = default_tracking_uri(search_dir) if state.get("default_store", True) else state["tracking_uri"]
        if "***" in tracking_uri:
            raise SpecError(f"{state_file}: the search tracked to {tracking_uri}, whose credentials are not "
                            f"stored; pass the URI again with --tracking-uri")
    check_tracking_uri(tracking_uri, what="tracking URI")
    tracker = SearchTracker.attach(search_dir, tracking_uri, log=log)
    tracker.flush()
    return tracker.synced_records, tracker.pending_records
