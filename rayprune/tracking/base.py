"""The tracking seam: what the search driver and the Ray callback need from a tracking backend.

:class:`Tracker` is the protocol (the MLflow implementation is
:class:`~rayprune.tracking.mlflow_tracker.SearchTracker`); :class:`NullTracker` logs nothing, for
searches run without tracking (benchmarks, replay).  No backend is imported here.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

__all__ = ["Tracker", "NullTracker", "register_active_tracker", "active_tracker"]


@runtime_checkable
class Tracker(Protocol):
    """What a tracking backend does for a search.  Called on the driver only.

    ``start_trial`` when Ray starts (or resumes) a trial, ``log_result`` after each of its
    reports, ``end_trial`` once when it finishes, is stopped or fails; ``log_search_params`` once
    at the start, ``log_reference`` when the dense reference is known, ``log_pareto`` whenever
    the front is written (after every ended trial and at the end), ``finish`` when the search
    ends (it returns how many records could not be logged and wait for ``rayprune sync``).
    ``ended_trials`` holds the ids of trials that ended (also before a resume); the callback
    uses it to tell trials cut off by an interruption from finished ones.  ``on_trial_end``,
    when the driver sets it, is called by the callback after every trial that ends, with the
    ended trials as results (see :class:`~rayprune.tracking.callback.MLflowTrackingCallback`).
    """

    ended_trials: set[str]
    unfinished_trials: list[str]
    trials_seen: int
    init_args: dict
    on_trial_end: Callable[[list], None] | None

    def start_trial(self, trial_id: str, config: Mapping[str, Any]) -> str | None: ...

    def log_result(self, trial_id: str, result: Mapping[str, Any], step: int) -> None: ...

    def end_trial(self, trial_id: str, status: str, tags: Mapping[str, str] | None = None) -> None: ...

    def log_search_params(self, params: Mapping[str, Any]) -> None: ...

    def log_reference(self, metrics: Mapping[str, Any] | None, *, metric: str, floor: float | None = None,
                      info: Mapping[str, Any] | None = None, criteria: Mapping[str, Any] | None = None) -> None: ...

    def log_pareto(self, front_rows: list[dict], all_rows: list[dict], **kwargs: Any) -> None: ...

    def log_trial_table(self, trial_id: str, name: str, rows: list[dict]) -> None: ...

    def finish(self, status: str = "FINISHED") -> int: ...


class NullTracker:
    """A tracker that records only which trials ended (so interruption handling still works)."""

    def __init__(self, search_dir: str | Path | None = None) -> None:
        self.ended_trials: set[str] = set()
        self.unfinished_trials: list[str] = []
        self.trials_seen = 0
        self.init_args = {"null": True, "search_dir": str(search_dir or "")}
        self.on_trial_end = None
        if search_dir is not None:
            register_active_tracker(search_dir, self)

    def start_trial(self, trial_id, config):
        return None

    def log_result(self, trial_id, result, step):
        pass

    def end_trial(self, trial_id, status, tags=None):
        if status != "KILLED" or not (tags or {}).get("interrupted"):
            self.ended_trials.add(trial_id)

    def log_search_params(self, params):
        pass

    def log_reference(self, metrics, *, metric, floor=None, info=None, criteria=None):
        pass

    def log_pareto(self, front_rows, all_rows, **kwargs):
        pass

    def log_trial_table(self, trial_id, name, rows):
        pass

    def finish(self, status="FINISHED"):
        return 0


# The driver's live tracker per search directory, so that a callback unpickled by
# ``Tuner.restore`` uses it instead of a stale copy.
_ACTIVE_TRACKERS: dict[str, Tracker] = {}


def _key(search_dir) -> str:
    return str(Path(search_dir).resolve())


def register_active_tracker(search_dir, tracker) -> None:
    """Make ``tracker`` the live tracker of ``search_dir`` in this (driver) process."""
    _ACTIVE_TRACKERS[_key(search_dir)] = tracker


# The live tracker of a search being restored (see restoring_tracker).
_RESTORING: list = []


@contextlib.contextmanager
def restoring_tracker(tracker):
    """While a resuming driver restores its search, a callback unpickled from Ray's state finds
    ``tracker`` even when its pickle names another directory: the search directory was copied
    or moved since it was pickled, and the copy's tracker is the one to use."""
    _RESTORING.append(tracker)
    try:
        yield
    finally:
        _RESTORING.pop()


def active_tracker(search_dir):
    """The live tracker of ``search_dir`` in this process, else the one of a search being
    restored (:func:`restoring_tracker`), or None."""
    return _ACTIVE_TRACKERS.get(_key(search_dir)) or (_RESTORING[-1] if _RESTORING else None)
