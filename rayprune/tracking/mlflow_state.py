"""The tracker's state in the search directory: ``tracking.json`` (search-level, rewritten
when it changes) and ``tracking_trials.jsonl`` (per-trial changes, appended).  A mixin of
:class:`~rayprune.tracking.mlflow_tracker.SearchTracker`, which sets the attributes it reads.
"""

from __future__ import annotations

import json
import os

from rayprune.tracking.uris import redact_uri

__all__ = ["TrackerState", "STATE_FILE", "TRIALS_FILE"]

#: The trial -> run map and tracking state inside the search directory.
STATE_FILE = "tracking.json"
#: The per-trial half of the tracker's state: one JSON line per change, appended (see
#: :class:`SearchTracker`), so saving costs the same at trial 1,000 as at trial 1.
TRIALS_FILE = "tracking_trials.jsonl"


class TrackerState:
    """Saving and reloading the trial -> run map (see :class:`SearchTracker` for why it is split
    in two files)."""

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
            "views_metric": self._state.get("views_metric"),
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
