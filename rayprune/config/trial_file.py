"""The ``config.yaml`` that ``rayprune train --config`` re-runs one trial from.

Written by ``rayprune export`` next to each exported model and logged on every trial's MLflow run,
from one function so the two never differ.  Pure dictionaries: no torch, no MLflow.
"""

from __future__ import annotations

__all__ = ["train_config_for"]


def train_config_for(meta: dict, trial_config: dict) -> dict:
    """The ``config.yaml`` that ``rayprune train`` re-runs: model, data, training, trial config."""
    spec = meta["spec"]
    return {
        "model": meta["settings"]["model"],
        "data": spec["data"],
        "data_dir": meta["data"].get("data_dir"),
        "metric": meta["settings"]["metric"],
        "training": {k: v for k, v in meta["settings"].items() if k not in ("model", "metric")},
        "trial": trial_config,
    }
