"""Evaluation of a model on a tokenised split: the task predicts, post-processes and scores
(:meth:`rayprune.tasks.base.Task.evaluate`)."""

from __future__ import annotations

import numpy as np
from torch import nn

__all__ = ["predict", "evaluate"]


def predict(model: nn.Module, split, batch_size: int, task=None) -> np.ndarray:
    """Logits of a sequence classifier over a tokenized split, in order."""
    from rayprune.tasks.base import Task
    from rayprune.tasks.classification import predict_logits

    return predict_logits(model, split, batch_size, task if task is not None else Task())


def evaluate(model: nn.Module, split, data, batch_size: int) -> dict[str, float]:
    """The task's metrics of ``model`` on ``split`` (``data`` is the TokenizedTask)."""
    return data.task.evaluate(model, split, batch_size)
