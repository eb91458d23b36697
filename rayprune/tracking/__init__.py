"""Tracking backends behind one protocol.

* :mod:`rayprune.tracking.base`: the :class:`Tracker` protocol and a :class:`NullTracker`;
* :mod:`rayprune.tracking.mlflow_tracker`: MLflow (the only module importing mlflow);
* :mod:`rayprune.tracking.callback`: the Ray Tune callback over any tracker (imports Ray).

Importing this package imports none of MLflow, Ray or torch.
"""

from rayprune.tracking.base import _ACTIVE_TRACKERS, NullTracker, Tracker, active_tracker, register_active_tracker

__all__ = ["Tracker", "NullTracker", "active_tracker", "register_active_tracker"]
