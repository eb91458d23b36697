"""Tracking records: every write of :class:`~rayprune.tracking.mlflow_tracker.SearchTracker`
is a small JSON-able dict (``op`` = ``create_run``, ``batch``, ``status``, ``reopen``,
``terminate``, ``artifact``, ``experiment_tag``) sent to MLflow here, or appended to the pending
journal while MLflow is unreachable and replayed later (records are idempotent).  A mixin of
``SearchTracker``, which sets the attributes it reads (``client``, ``journal``, the run map).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Mapping

from rayprune.tracking.mlflow_store import local_artifact_dir
from rayprune.tracking.uris import redact_uri, scrub

__all__ = ["RecordSender", "PARENT", "REFERENCE"]

# MLflow error codes that replaying cannot fix (a bug, a changed param, a deleted run): such a
# record is reported and dropped instead of blocking the journal forever.
_PERMANENT_ERRORS = frozenset({"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS",
                               "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE", "BAD_REQUEST"})
PARENT, REFERENCE = "@parent", "@reference"


def _is_http(uri: str) -> bool:
    return uri.split(":", 1)[0].lower() in ("http", "https")


def _permanent(err: BaseException) -> bool:
    return getattr(err, "error_code", None) in _PERMANENT_ERRORS


class RecordSender:
    """Sending records to MLflow, and the journal while it is away."""

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
        if key == PARENT:
            return self.parent_run_id
        if key == REFERENCE:
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
        slot = REFERENCE if record.get("role") == "reference" else key
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
        if slot == REFERENCE:
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
