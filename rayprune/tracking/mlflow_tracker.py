"""MLflow tracking: :class:`SearchTracker`, what a search logs and when.  It and the modules it is
split into are the only ones importing mlflow (lazily): :mod:`~rayprune.tracking.mlflow_store`
(where the store lives, creating it fast), :mod:`~rayprune.tracking.mlflow_records` (sending
records, the journal while MLflow is away), :mod:`~rayprune.tracking.mlflow_state` (the trial ->
run map in the search directory).

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
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from rayprune.errors import SpecError
from rayprune.tracking.base import register_active_tracker
from rayprune.tracking.journal import PendingJournal
from rayprune.tracking.mlflow_records import PARENT as _PARENT, REFERENCE as _REFERENCE, RecordSender, _is_http
from rayprune.tracking.mlflow_state import STATE_FILE, TRIALS_FILE, TrackerState
from rayprune.tracking.mlflow_store import (ARTIFACTS_DIR, _slug, create_store_in_background, default_tracking_uri,
                                            local_artifact_dir, schema_template)
from rayprune.tracking.summary import (VIEW_TAG_PREFIX, WORKFLOW_QUERY, compare_link, display_params, front_table,
                                       row_tags, run_name, runs_table_views, search_note)
from rayprune.tracking.uris import check_tracking_uri, redact_uri, scrub

# The store's helpers and the state's file names are re-exported: callers import them from here.
__all__ = ["default_tracking_uri", "create_store_in_background", "schema_template", "SearchTracker",
           "sync_search_dir", "local_artifact_dir", "EXPERIMENT_KIND_TAG", "WORKFLOW_QUERY", "EXPERIMENT_KIND",
           "ARTIFACTS_DIR", "STATE_FILE", "TRIALS_FILE"]

#: The experiment tag MLflow 3's UI reads to choose an experiment's layout (``mlflow.experimentKind``
#: in the server's JS bundle); ``custom_model_development`` opens on the runs table instead of
#: the GenAI overview (traces, tokens).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

# Metrics worth a per-evaluation curve in the UI (few per child, ECOSYSTEM pain 13).  No param
# is logged again as a metric: ``step`` is MLflow's own step, ``target_sparsity`` is a param.
_LOGGED_METRIC_PREFIXES = (
    "sparsity", "scheduled_sparsity", "train_loss", "budget_fraction", "seconds", "retained",
    "latency", "parameters", "method/",
)
_NEVER_METRICS = frozenset({"step", "training_iteration", "target_sparsity"})
# The order a child's metrics are first logged in is the order MLflow lists them (its store keeps
# the first insertion): the objective metric, sparsity and ``retained`` first, the other task
# metrics next, the loop's bookkeeping after them and the method's diagnostics last.
_METRIC_ORDER = ("sparsity", "retained", "sparsity_encoder", "scheduled_sparsity", "train_loss", "budget_fraction",
                 "seconds", "latency", "parameters")
# Text a trial reports (``precision``: fp32, bf16 or fp16, what ``training.precision`` resolved
# to on its device): a run tag, set when first reported.  Not a param: params are immutable and
# ``auto`` may resolve differently on the node a retried trial lands on.
_RESULT_TAGS = ("numeric_precision",)
_NOTE_TAG = "mlflow.note.content"
_LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"


def _cell(value):
    """A table cell MLflow's table view shows as text: lists (gold answers, entities) joined."""
    if isinstance(value, (list, tuple)):
        return " | ".join(map(str, value))
    return value
_FRONT_TABLE = "pareto/front.json"


def _now_ms() -> int:
    return int(time.time() * 1000)


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


def _reference_times(info: Mapping[str, Any], seconds: float | None, now: int) -> tuple[int, int]:
    """(start, end) in ms of the dense reference's training, for its run's Duration: it ended
    when its ``reference.json`` was written and took its reported ``seconds``.  A reference not
    trained by this search, or one whose file is gone, starts and ends ``now``."""
    path = Path(str(info.get("reference") or "")) / "reference.json"
    if not info.get("reference_trained") or not path.is_file():
        return now, now
    ended = int(path.stat().st_mtime * 1000)
    return ended - int(1000 * seconds) if seconds and seconds > 0 else ended, ended


def _result_tags(result: Mapping[str, Any]) -> dict[str, str]:
    """The :data:`_RESULT_TAGS` a result holds as text."""
    return {k: result[k] for k in _RESULT_TAGS if isinstance(result.get(k), str) and result[k]}


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class SearchTracker(RecordSender, TrackerState):
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
        self._search_meta: dict | None = None  # search.json, read at the first trial
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
        full = self._train_config(plain)
        config_yaml = yaml.safe_dump(plain, sort_keys=True) if full is None else yaml.safe_dump(full, sort_keys=False)
        self._submit({
            "op": "create_run", "key": trial_id, "name": name, "start_time": _now_ms(),
            "tags": {"rayprune.role": "trial", "method": str(config.get("method"))},
            "params": display_params(config), "config_yaml": config_yaml,
        })
        return self.child_runs.get(trial_id)

    def _train_config(self, trial_config: dict) -> dict | None:
        """The config ``rayprune train --config`` re-runs the trial from (model, data, training and
        the trial's own keys: what ``rayprune export`` writes), built from the search directory's
        ``search.json``; None where there is none (a tracker used without a search): the run's
        ``config.yaml`` then holds the trial's sampled keys only."""
        if self._search_meta is None:
            try:
                meta = json.loads((self.search_dir / "search.json").read_text())
            except (OSError, ValueError):
                meta = {}
            self._search_meta = meta if isinstance(meta, dict) and {"spec", "settings", "data"} <= set(meta) else {}
        if not self._search_meta:
            return None
        from rayprune.config.trial_file import train_config_for

        return train_config_for(self._search_meta, trial_config)

    def log_result(self, trial_id: str, result: Mapping[str, Any], step: int) -> None:
        if not self._known(trial_id):
            return
        tags = _result_tags(result)
        if tags:  # sent once: _send_tags skips a tag whose value it already sent
            self._send_tags(trial_id, tags)
        skip = _NEVER_METRICS | set(_RESULT_TAGS) | self._param_keys.get(trial_id, set())
        now = _now_ms()
        metrics = sorted((
            [k, float(v), now, int(step)]
            for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
            and k not in skip and (k in self.metric_names or k.startswith(_LOGGED_METRIC_PREFIXES))
        ), key=lambda m: self._metric_rank(m[0]))
        if metrics:
            self._submit({"op": "batch", "run": trial_id, "metrics": metrics})

    def _metric_rank(self, key: str) -> tuple:
        """Where ``key`` goes in a child's metrics (see ``_METRIC_ORDER``)."""
        if key == self._reference.get("metric"):
            return (0, "")
        for prefix_rank, prefix in enumerate(_METRIC_ORDER[:2], 1):
            if key == prefix:
                return (prefix_rank, "")
        if key.startswith("method/"):
            return (9, key)
        if key in self.metric_names and not key.startswith(_METRIC_ORDER):
            return (3, key)
        ranks = [i for i, prefix in enumerate(_METRIC_ORDER) if key.startswith(prefix)]
        return (4 + (ranks[-1] if ranks else len(_METRIC_ORDER)) / 100, key)

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
        self._send_views(metric)
        parent_metrics = []
        if floor is not None and known.get("floor") != float(floor):
            parent_metrics.append([f"floor_{metric}", float(floor), now, 0])
        if metrics and self.reference_run_id is None and _REFERENCE not in self._pending_creates:
            self._pending_creates.add(_REFERENCE)
            started, ended = _reference_times(info, numbers.get("seconds"), now)
            self._submit({
                "op": "create_run", "key": "reference", "role": "reference", "name": "reference-dense",
                "start_time": started, "tags": {"rayprune.role": "reference", "role": "reference",
                                            **_result_tags(metrics)},
                "params": display_params({"model": info.get("reference", ""), "trained": info.get("reference_trained"),
                                          "steps": info.get("reference_steps")}),
            })
            self._submit({"op": "batch", "run": _REFERENCE, "metrics": [[k, v, ended, 0] for k, v in numbers.items()]})
            self._submit({"op": "terminate", "run": _REFERENCE, "status": "FINISHED", "end_time": ended})
            parent_metrics += [[f"reference_{k}", v, now, 0] for k, v in numbers.items()]
        if parent_metrics:
            self._submit({"op": "batch", "run": _PARENT, "metrics": parent_metrics})
        self._save()

    def _send_views(self, metric: str) -> None:
        """Put the runs-table views the printed links open into experiment tags
        (:func:`~rayprune.tracking.summary.runs_table_views`), once per search and metric;
        ``tracking.json`` records the metric so ``rayprune ui`` links to them."""
        if self._state.get("views_metric") == metric:
            return
        for key, value in runs_table_views(metric).items():
            self._submit({"op": "experiment_tag", "key": VIEW_TAG_PREFIX + key, "value": value})
        self._state["views_metric"] = metric

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
        front_ids_sorted = [r["trial_id"] for r in front_rows if r["trial_id"] in self.child_runs]
        for row in all_rows:
            if self._known(row["trial_id"]):
                self._send_tags(row["trial_id"], row_tags(row, front_ids, metric=metric, floor=floor))
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
            hypervolume_reference=hypervolume_reference, running=self.trials_seen == 0,
            front_compare_link=compare_link(self.experiment_id, [self.child_runs[t] for t in front_ids_sorted]),
            data=self._search_json().get("data") or {})
        self._send_tags(_PARENT, {_NOTE_TAG: note,
                                  _LOGGED_ARTIFACTS_TAG: json.dumps([{"path": _FRONT_TABLE, "type": "table"}])})

    def log_trial_table(self, trial_id: str, name: str, rows: list[dict]) -> None:
        """A small table on a trial's run (MLflow's table artifact, rendered by the UI's
        Artifacts tab): the driver logs each front member's predictions sample with it."""
        if not rows or not self._known(trial_id):
            return
        columns = list(dict.fromkeys(k for row in rows for k in row))
        table = {"columns": columns, "data": [[_cell(row.get(c)) for c in columns] for row in rows]}
        self._submit({"op": "artifact", "run": trial_id, "name": name, "text": json.dumps(table)})
        self._send_tags(trial_id, {_LOGGED_ARTIFACTS_TAG: json.dumps([{"path": name, "type": "table"}])})

    def _criteria(self) -> dict:
        """The front's criteria as :meth:`log_reference` got them, else as ``search.json`` has them."""
        if "criteria" in self._reference:
            return self._reference["criteria"]
        return dict(self._search_json().get("criteria") or {})

    def _search_json(self) -> dict:
        """The search directory's ``search.json`` (settings, data, criteria); {} before it exists."""
        try:
            meta = json.loads((self.search_dir / "search.json").read_text())
        except (OSError, ValueError):
            return {}
        return meta if isinstance(meta, dict) else {}

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
