"""Measured properties of a model: sparsity (from the weights), parameter counts, latency.

Sparsity is always *measured* as the fraction of exact zeros, never copied from a target.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from rayprune.methods.masks import count_zeros
from rayprune.models import encoder_parameters

__all__ = ["sparsity", "encoder_sparsity", "count_parameters", "Latency", "measure_latency"]


def sparsity(model: nn.Module, targets: Sequence[str]) -> float:
    """Fraction of exact zeros over the named parameters (the prunable set)."""
    named = dict(model.named_parameters())
    zeros, total = count_zeros([named[t].detach() for t in targets])
    return zeros / total if total else 0.0


def encoder_sparsity(model: nn.Module) -> float:
    """Fraction of exact zeros over every parameter inside the encoder blocks."""
    zeros, total = count_zeros([p.detach() for p in encoder_parameters(model).values()])
    return zeros / total if total else 0.0


def count_parameters(model: nn.Module, *, nonzero: bool = False) -> int:
    """Number of parameters (or of non-zero parameters), shared tensors counted once."""
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n += int((p != 0).sum()) if nonzero else p.numel()
    return n


@dataclass
class Latency:
    median_s: float
    p90_s: float
    repeats: int


@torch.inference_mode()
def measure_latency(model: nn.Module, inputs: dict, *, repeats: int = 10, warmup: int = 2) -> Latency:
    """Median wall-clock of ``model(**inputs)`` over ``repeats`` runs after ``warmup`` runs."""
    model.eval()
    for _ in range(warmup):
        model(**inputs)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(**inputs)
        times.append(time.perf_counter() - t0)
    times.sort()
    return Latency(statistics.median(times), times[min(len(times) - 1, int(0.9 * len(times)))], repeats)
