"""Evaluation of a model on a tokenised split: logits in order, then the task's metrics."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rayprune.metrics import compute_metrics

__all__ = ["predict", "evaluate"]


@torch.no_grad()
def predict(model: nn.Module, split, batch_size: int) -> np.ndarray:
    """Logits of ``model`` over a tokenized split, in order."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for batch in split.batches(batch_size, shuffle=False):
        batch.pop("labels", None)
        batch = {k: v.to(device) for k, v in batch.items()}
        out.append(model(**batch).logits.float().cpu().numpy())
    model.train()
    return np.concatenate(out) if out else np.zeros((0, 1))


def evaluate(model: nn.Module, split, data, batch_size: int) -> dict[str, float]:
    """Task metrics of ``model`` on ``split`` (``data`` is the TokenizedTask)."""
    logits = predict(model, split, batch_size)
    return compute_metrics(data.metrics, logits, np.asarray(split.labels), is_regression=data.is_regression)
