"""Pure mask maths: which entries to prune, and how sparse a set of tensors is.

Everything here takes plain tensors and returns plain tensors or numbers; no module, hook or
optimizer is touched. The pruning methods call these; tests check them on hand-made inputs.

Convention: a *mask* is a bool tensor of the weight's shape, ``True`` = keep.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch

__all__ = [
    "global_threshold",
    "select_lowest_k_global",
    "select_lowest_k_per_tensor",
    "count_zeros",
    "sparsity_of",
]

# Above this many scores an exact global kthvalue becomes the dominating cost of a masking
# step on the CPU; we then estimate the threshold from a uniform random sample.  The sampled
# quantile's error is ~ sqrt(q(1-q)/m) in rank, i.e. < 0.1% of the entries for m = 2**20.
_EXACT_THRESHOLD_LIMIT = 1 << 22
_SAMPLE_SIZE = 1 << 20


def global_threshold(scores: Mapping[str, torch.Tensor], k: int, *, exact: bool = True) -> float:
    """Return the k-th smallest value over all ``scores`` (1-based k), a global pruning cut.

    Args:
        scores: name -> score tensor; higher means keep.
        k: how many entries fall at or below the threshold; ``0 <= k <= total``.
        exact: if False and the total is large, estimate from a sample (cheap, see module note).
    """
    total = sum(s.numel() for s in scores.values())
    if not 0 <= k <= total:
        raise ValueError(f"k must be in [0, {total}], got k={k}")
    if k == 0:
        return float("-inf")
    flat = torch.cat([s.detach().reshape(-1).float() for s in scores.values()])  # (total,)
    if exact or total <= _EXACT_THRESHOLD_LIMIT:
        return float(torch.kthvalue(flat, k).values)
    gen = torch.Generator(device="cpu").manual_seed(0)
    idx = torch.randint(0, total, (_SAMPLE_SIZE,), generator=gen).to(flat.device)
    sample = flat[idx]  # (_SAMPLE_SIZE,)
    # The k-th smallest of all entries is close to the same-rank order statistic of the sample.
    # kthvalue, not torch.quantile: quantile interpolates between neighbours, and entries scored
    # -inf (already pruned, see PruningMethod.step) turn that into -inf + inf = NaN, a threshold
    # no score exceeds, so every entry would be pruned.
    rank = min(max(math.ceil(k / total * _SAMPLE_SIZE), 1), _SAMPLE_SIZE)
    return float(torch.kthvalue(sample, rank).values)


def _lowest_k_mask(score: torch.Tensor, k: int) -> torch.Tensor:
    """Mask keeping all but exactly the k lowest-scored entries of one tensor.  Among tied
    scores at the cut, ``torch.topk`` picks which go: deterministically for a given input, but
    not by position."""
    flat = score.reshape(-1)
    keep = torch.ones_like(flat, dtype=torch.bool)
    if k > 0:
        idx = torch.topk(flat.float(), k, largest=False, sorted=False).indices
        keep[idx] = False
    return keep.view_as(score)


def select_lowest_k_per_tensor(
    scores: Mapping[str, torch.Tensor], sparsity: float
) -> dict[str, torch.Tensor]:
    """Per-tensor ("layer") selection: prune ``round(sparsity * numel)`` entries of each tensor."""
    _check_sparsity(sparsity)
    return {
        name: _lowest_k_mask(s, int(round(sparsity * s.numel()))) for name, s in scores.items()
    }


def select_lowest_k_global(
    scores: Mapping[str, torch.Tensor], sparsity: float, *, exact: bool = True
) -> dict[str, torch.Tensor]:
    """Global selection: prune the ``round(sparsity * total)`` lowest scores across all tensors.

    With exact selection, exactly k entries are pruned even under ties (``torch.topk`` picks
    among tied scores at the cut, deterministically for a given input but not by position), so
    the achieved sparsity equals the request to one element.  Above ``_EXACT_THRESHOLD_LIMIT``
    entries, or with ``exact=False``, every entry at or below one threshold is pruned: ties at
    the threshold are all pruned, and with ``exact=False`` on a large total the threshold is
    estimated from a sample (see the module note).
    """
    _check_sparsity(sparsity)
    total = sum(s.numel() for s in scores.values())
    k = int(round(sparsity * total))
    if k == 0:
        return {name: torch.ones_like(s, dtype=torch.bool) for name, s in scores.items()}
    if exact and total <= _EXACT_THRESHOLD_LIMIT:
        flat = torch.cat([s.detach().reshape(-1).float() for s in scores.values()])
        keep = torch.ones_like(flat, dtype=torch.bool)
        keep[torch.topk(flat, k, largest=False, sorted=False).indices] = False
        masks, offset = {}, 0
        for name, s in scores.items():
            masks[name] = keep[offset : offset + s.numel()].view_as(s)
            offset += s.numel()
        return masks
    threshold = global_threshold(scores, k, exact=exact)
    return {name: s > threshold for name, s in scores.items()}


def count_zeros(tensors: Mapping[str, torch.Tensor] | list[torch.Tensor]) -> tuple[int, int]:
    """Return (zeros, total) over the given tensors, counting exact zeros."""
    values = tensors.values() if isinstance(tensors, Mapping) else tensors
    zeros = total = 0
    for t in values:
        zeros += int((t == 0).sum())
        total += t.numel()
    return zeros, total


def sparsity_of(tensors: Mapping[str, torch.Tensor] | list[torch.Tensor]) -> float:
    """Fraction of exact zeros over the given tensors (measured, never assumed)."""
    zeros, total = count_zeros(tensors)
    return zeros / total if total else 0.0


def _check_sparsity(sparsity: float) -> None:
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got sparsity={sparsity}")
