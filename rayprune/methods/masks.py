"""Pure mask maths: which entries to prune, and how sparse a set of tensors is.

Everything here takes plain tensors and returns plain tensors or numbers; no module, hook or
optimizer is touched. The pruning methods call these; tests check them on hand-made inputs.

Convention: a *mask* is a bool tensor of the weight's shape, ``True`` = keep.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

__all__ = [
    "global_threshold",
    "select_lowest_k_global",
    "select_lowest_k_per_tensor",
    "count_zeros",
    "sparsity_of",
    "lowest_kept_indices",
    "select_new_pruned",
    "prefer_current",
    "kth_smallest",
    "reselect_keep",
    "UNSTRUCTURED",
    "NM_TOLERANCE",
    "GPU_KERNEL_MULTIPLE",
    "parse_sparsity_pattern",
    "pattern_sparsity",
    "check_pattern_target",
    "keep_top_in_groups",
    "nm_keep",
    "protect_top_n_of_m",
    "nm_violations",
    "nm_unfit_reason",
    "layers_left_dense",
    "gpu_kernel_accepts",
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


# ------------------------------------------------- incremental selection (masks only grow)
# Below this many entries a plain top-k over the kept entries is as cheap as anything else.
_SAMPLED_MIN_ENTRIES = 1 << 16
# Random sample used to bound the k-th lowest kept score (indices drawn with replacement).
_BOUND_SAMPLE_SIZE = 1 << 14


def _selection_groups(n: int, sizes: Sequence[int] | None) -> list[tuple[int, int]]:
    """``(start, end)`` of each selection group of ``n`` concatenated scores: one global group
    when ``sizes`` is ``None``, else one per target ("layer" selection), checked to cover ``n``.
    Shared by the incremental (:func:`select_new_pruned`) and reselecting (:func:`reselect_keep`)
    selections."""
    if sizes is None:
        return [(0, n)]
    starts = [0]
    for size in sizes:
        starts.append(starts[-1] + int(size))
    if starts[-1] != n:
        raise ValueError(f"sizes sum to {starts[-1]}, expected {n}")
    return list(zip(starts[:-1], starts[1:]))


def _at_most_below_ceiling(
    k: int, score: torch.Tensor, ceiling: float | None, *, among: torch.Tensor | None = None
) -> int:
    """``k`` capped at the number of entries scored at or below ``ceiling`` (among the True
    entries of ``among`` if given): soft movement's threshold makes the request a cap.  ``k``
    unchanged without a ceiling or when it is not positive."""
    if ceiling is None or k <= 0:
        return k
    below = score <= ceiling
    if among is not None:
        below &= among
    return min(k, int(below.count_nonzero()))


def lowest_kept_indices(
    score: torch.Tensor,
    keep: torch.Tensor,
    k: int,
    *,
    kept: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Flat indices of the ``k`` lowest ``score`` entries among those where ``keep`` is True.

    Exact: the result always has ``min(k, kept)`` indices and no kept entry outside it scores
    lower than one inside it (ties broken arbitrarily).  When ``k`` is small against the number
    of kept entries, the k-th lowest kept score is bounded from above on a random sample, every
    kept entry at or below the bound becomes a candidate, and the top-k runs on the candidates
    only: one comparison pass instead of a top-k over the whole tensor.  If the sample bound is
    too low (fewer than ``k`` candidates, probability below 1e-6) it falls back to the top-k
    over all kept entries.  torch offers ``topk``/``kthvalue`` but no selection restricted to a
    subset that avoids sorting work over the whole tensor, hence this function.

    Args:
        score: 1-D scores, higher = keep.
        keep: 1-D bool of the same length; only True entries may be returned.
        k: how many to return.
        kept: ``keep.count_nonzero()`` if the caller has it.
        generator: CPU generator for the sample (fixes the tie-breaking for reproducibility).

    Returns:
        1-D int64 indices into ``score``.
    """
    if kept is None:
        kept = int(keep.count_nonzero())
    if k <= 0:
        return torch.empty(0, dtype=torch.long, device=score.device)
    if k >= kept:
        return keep.nonzero().squeeze(1)
    n = score.numel()
    if n >= _SAMPLED_MIN_ENTRIES and 8 * k < kept:
        idx = torch.randint(0, n, (_BOUND_SAMPLE_SIZE,), generator=generator).to(score.device)
        sample = score[idx][keep[idx]]  # (kept draws,)
        expected = k * sample.numel() / kept  # draws expected below the true k-th lowest
        # Binomial upper tail: the true k-th lowest exceeds this rank's value with probability
        # < 1e-6, so there are at least k candidates.
        rank = math.ceil(expected + 5.0 * math.sqrt(expected) + 8.0)
        if rank < sample.numel():
            bound = sample.kthvalue(rank).values
            candidates = (keep & (score <= bound)).nonzero().squeeze(1)  # (c,), c >= k usually
            if candidates.numel() >= k:
                pick = torch.topk(score[candidates], k, largest=False, sorted=False).indices
                return candidates[pick]
    candidates = keep.nonzero().squeeze(1)  # (kept,)
    pick = torch.topk(score[candidates].float(), k, largest=False, sorted=False).indices
    return candidates[pick]


def select_new_pruned(
    score: torch.Tensor,
    keep: torch.Tensor,
    sparsity: float,
    *,
    sizes: Sequence[int] | None = None,
    ceiling: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Which kept entries to prune now so that ``round(sparsity * n)`` are pruned in total.

    Entries already pruned (``keep`` False) stay pruned and count towards the total, so the new
    mask ``keep`` minus the result is exactly what ``masks.select_lowest_k_global`` /
    ``select_lowest_k_per_tensor`` give with the previous mask's entries forced to the bottom
    (what ``PruningMethod.step`` does), computed incrementally.

    Args:
        score: 1-D scores of all targets concatenated in order, higher = keep.
        keep: 1-D bool, the current mask (True = kept); not modified.
        sparsity: requested fraction pruned, in [0, 1).
        sizes: per-target lengths for per-tensor ("layer") selection; ``None`` = one global cut.
        ceiling: only entries with ``score <= ceiling`` may be newly pruned (soft movement's
            threshold); the request is then a cap, not a promise.
        generator: CPU generator for :func:`lowest_kept_indices`.

    Returns:
        1-D int64 flat indices of the entries to prune (all currently kept, no duplicates).
    """
    _check_sparsity(sparsity)
    chosen = []
    for lo, hi in _selection_groups(score.numel(), sizes):
        s, kp = score[lo:hi], keep[lo:hi]  # views, (hi - lo,)
        kept = int(kp.count_nonzero())
        k_new = int(round(sparsity * (hi - lo))) - (hi - lo - kept)
        k_new = _at_most_below_ceiling(k_new, s, ceiling, among=kp)
        if k_new > 0:
            chosen.append(lowest_kept_indices(s, kp, k_new, kept=kept, generator=generator) + lo)
    if not chosen:
        return torch.empty(0, dtype=torch.long, device=score.device)
    return torch.cat(chosen)


# ------------------------------------------- reselection (pruned entries may come back)
def prefer_current(score: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``score`` with every currently pruned entry (``keep`` False) moved one float below its
    value, so that at a tie the current mask wins: a pruned entry comes back only when its score
    is strictly higher than that of a kept entry it would replace.  Without this, entries tied
    at the cut (e.g. scores that are exactly 0) would swap at every reselection."""
    lower = torch.nextafter(score, torch.full_like(score, float("-inf")))
    return torch.where(keep, score, lower)


def kth_smallest(values: torch.Tensor, k: int, *, generator: torch.Generator | None = None) -> float:
    """The exact ``k``-th smallest entry (1-based) of the 1-D tensor ``values``.

    Large inputs are bracketed first: the k-th smallest lies, with probability above 1 - 1e-6,
    between two order statistics of a random sample, so two comparison passes find the entries
    below and between them and ``kthvalue`` runs on the few between.  If the bracket misses (the
    count check fails) it falls back to ``kthvalue`` over everything.  torch has no selection
    cheaper than ``kthvalue``'s partial sort over the whole tensor, hence this function; it is what
    makes a reselection every step affordable (movement, SEVEN, soft movement).
    """
    n = values.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got k={k}")
    if n >= _SAMPLED_MIN_ENTRIES:
        idx = torch.randint(0, n, (_BOUND_SAMPLE_SIZE,), generator=generator).to(values.device)
        sample = values[idx].sort().values  # (m,)
        m = sample.numel()
        expected = k * m / n  # sample entries expected below the true k-th smallest
        spread = 5.0 * math.sqrt(expected * (1.0 - k / n)) + 8.0
        low_rank, high_rank = math.floor(expected - spread), math.ceil(expected + spread)
        low = sample[low_rank - 1] if low_rank >= 1 else None
        high = sample[high_rank - 1] if high_rank <= m else None
        below = 0 if low is None else int((values < low).count_nonzero())
        inside = torch.ones_like(values, dtype=torch.bool) if low is None else values >= low
        if high is not None:
            inside &= values <= high
        between = values[inside]  # (c,), usually a few percent of n
        if below < k <= below + between.numel():
            return float(torch.kthvalue(between, k - below).values)
    return float(torch.kthvalue(values, k).values)


def reselect_keep(
    score: torch.Tensor,
    keep: torch.Tensor,
    sparsity: float,
    *,
    sizes: Sequence[int] | None = None,
    ceiling: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The new mask when every entry may be chosen again: in each group, all but the
    ``round(sparsity * n)`` lowest ``score`` entries are kept, whatever ``keep`` says; among
    entries tied at the cut the currently pruned ones (``keep`` False) are pruned first, then by
    position.  The ``reselect`` counterpart of :func:`select_new_pruned` (same arguments).

    Args:
        score: 1-D scores of all targets concatenated in order, higher = keep.
        keep: 1-D bool, the current mask (True = kept); only breaks ties; not modified.
        sparsity: requested fraction pruned, in [0, 1).
        sizes: per-target lengths for per-tensor ("layer") selection; ``None`` = one global cut.
        ceiling: only entries with ``score <= ceiling`` may be pruned (soft movement's
            threshold); the request is then a cap, not a promise.
        generator: CPU generator for :func:`kth_smallest`'s sample.

    Returns:
        1-D bool, the new mask (True = kept).
    """
    _check_sparsity(sparsity)
    new = torch.ones_like(keep, dtype=torch.bool)
    for lo, hi in _selection_groups(score.numel(), sizes):
        s, kp = score[lo:hi], keep[lo:hi]  # views, (hi - lo,)
        k = _at_most_below_ceiling(int(round(sparsity * (hi - lo))), s, ceiling)
        if k == 0:
            continue
        cut = kth_smallest(s, k, generator=generator)
        group = new[lo:hi]
        torch.gt(s, cut, out=group)
        # Entries at or below the cut are pruned; more than k only when several tie at it.
        surplus = (hi - lo) - int(group.count_nonzero()) - k
        if surplus > 0:
            tied = (s == cut).nonzero().squeeze(1)  # (t,), t > surplus
            # Keep ``surplus`` of the tied entries: the currently kept ones first, then by
            # position, earliest first (argsort is stable).
            order = torch.argsort(kp[tied].to(torch.int8), descending=True, stable=True)
            group[tied[order[:surplus]]] = True
    return new


# ------------------------------------------------------------ N:M semi-structured patterns
#: Patterns are ``"unstructured"`` or ``"N:M"`` (keep at most N of every M consecutive weights
#: along a linear layer's input dimension, N < M).
UNSTRUCTURED = "unstructured"
#: A target sparsity this close to ``1 - N/M`` is that pattern's sparsity (``0.6667`` for 1:3).
NM_TOLERANCE = 1e-3
#: torch's default semi-structured kernel (cuSPARSELt, fp16/bf16) needs both dimensions of a
#: weight to be multiples of 16 (``torch.sparse.SparseSemiStructuredTensorCUSPARSELT``).
GPU_KERNEL_MULTIPLE = 16


def parse_sparsity_pattern(pattern: object) -> tuple[int, int] | None:
    """``"unstructured"`` -> ``None``; ``"N:M"`` with integers ``0 < N < M`` -> ``(N, M)``.

    Raises:
        TypeError: not a string (YAML reads an unquoted ``2:4`` as the base-60 integer 124).
        ValueError: any other string.
    """
    allowed = "'unstructured' or 'N:M' with integers 0 < N < M, e.g. '2:4'"
    if not isinstance(pattern, str):
        hint = ""
        if isinstance(pattern, int) and not isinstance(pattern, bool) and pattern >= 60:
            n, m = divmod(pattern, 60)
            hint = (f" (YAML 1.1 reads an unquoted {n}:{m} as the base-60 number {pattern}; "
                    f"quote it: '{n}:{m}')")
        raise TypeError(f"sparsity_pattern must be {allowed}, got {pattern!r}{hint}")
    if pattern == UNSTRUCTURED:
        return None
    n_text, colon, m_text = pattern.partition(":")
    if colon and n_text.isdigit() and m_text.isdigit():
        n, m = int(n_text), int(m_text)
        if 0 < n < m:
            return n, m
    raise ValueError(f"sparsity_pattern must be {allowed}, got {pattern!r}")


def pattern_sparsity(n: int, m: int) -> float:
    """The sparsity an exact ``N:M`` pattern has: ``1 - N/M``."""
    return 1.0 - n / m


def check_pattern_target(pattern: object, target: float) -> None:
    """Refuse a ``target`` sparsity that an ``N:M`` pattern cannot reach (it reaches exactly
    ``1 - N/M``); any target goes with ``unstructured``.  Called before any trial starts.

    Raises:
        ValueError: naming the pattern, its sparsity and the target.
    """
    nm = parse_sparsity_pattern(pattern)
    if nm is None:
        return
    reach = pattern_sparsity(*nm)
    if abs(float(target) - reach) > NM_TOLERANCE:
        raise ValueError(
            f"sparsity_pattern {pattern!r} keeps {nm[0]} of every {nm[1]} weights, so its sparsity "
            f"is {reach:.4g}; target_sparsity must be {reach:.4g}, got {target}"
        )


def keep_top_in_groups(score: torch.Tensor, group: int, keep: int) -> torch.Tensor:
    """Mask keeping the ``keep`` highest-scored entries of every ``group`` consecutive entries
    along the last dimension (``score.shape[-1] % group == 0``); ties broken by ``torch.topk``.

    With ``group = M, keep = N`` this is the N:M projection; with ``group = in_features`` it is
    per-row selection (Wanda's per-output comparison group).
    """
    if score.shape[-1] % group:
        raise ValueError(f"last dimension {score.shape[-1]} is not a multiple of the group size {group}")
    if not 0 <= keep <= group:
        raise ValueError(f"keep must be in [0, {group}], got keep={keep}")
    grouped = score.reshape(-1, group)  # (rows * groups, group)
    mask = torch.zeros_like(grouped, dtype=torch.bool)
    if keep:
        mask.scatter_(1, torch.topk(grouped.float(), keep, dim=1, sorted=False).indices, True)
    return mask.view(score.shape)


def nm_keep(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """The N:M mask of ``score``: the ``n`` highest of every ``m`` consecutive entries along the
    input (last) dimension."""
    return keep_top_in_groups(score, m, n)


def protect_top_n_of_m(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """``score`` (a copy) with the top ``n`` of every group of ``m`` set to ``+inf``.

    A lowest-k selection over the result never prunes a group below ``n`` kept entries while
    ``k`` is at most the number of finite scores, and at ``k = (1 - n/m) * numel`` it prunes
    exactly the N:M complement.  This is how a gradual ramp reaches N:M: every masking step
    stays N:M-compatible and the ramp's last step is the N:M projection of the current scores.
    """
    return score.masked_fill(nm_keep(score, n, m), float("inf"))


def nm_violations(weight: torch.Tensor, n: int, m: int) -> int:
    """Number of groups of ``m`` consecutive entries (input dimension) holding more than ``n``
    non-zeros: 0 for a weight that follows the pattern."""
    if weight.shape[-1] % m:
        raise ValueError(f"last dimension {weight.shape[-1]} is not a multiple of M={m}")
    nonzero = (weight.detach().reshape(-1, m) != 0).sum(dim=1)  # (groups,)
    return int((nonzero > n).sum())


def nm_unfit_reason(shape: Sequence[int], m: int, *, multiple: int = GPU_KERNEL_MULTIPLE) -> str | None:
    """Why a weight of ``shape`` (``(out, in)``) cannot take an N:M pattern that a GPU kernel
    runs, or ``None`` when it can: not 2-D, input dimension not a multiple of ``m``, or a
    dimension not a multiple of ``multiple`` (torch's cuSPARSELt kernel, fp16/bf16)."""
    if len(shape) != 2:
        return f"not a 2-D weight (shape {tuple(shape)})"
    out_dim, in_dim = int(shape[0]), int(shape[1])
    if in_dim % m:
        return f"input dimension {in_dim} is not a multiple of M={m}"
    if in_dim % multiple or out_dim % multiple:
        return f"shape ({out_dim}, {in_dim}) is not a multiple of {multiple} in both dimensions (GPU kernel)"
    return None


def layers_left_dense(shapes: Mapping[str, Sequence[int]], pattern: object) -> dict[str, str]:
    """The targets an ``N:M`` pattern leaves dense, each with the reason (for the model card):
    ``{fqn: reason}``; empty for ``unstructured``.

    Args:
        shapes: target FQN -> shape (e.g. ``{f: p.shape for f, p in params.items()}``).
        pattern: the method's ``sparsity_pattern``.
    """
    nm = parse_sparsity_pattern(pattern)
    if nm is None:
        return {}
    out = {}
    for fqn, shape in shapes.items():
        reason = nm_unfit_reason(shape, nm[1])
        if reason is not None:
            out[fqn] = reason
    return out


def gpu_kernel_accepts(n: int, m: int) -> bool:
    """Whether an N:M mask is also a 2:4 mask (every aligned group of 4 holds at most 2
    non-zeros), the only semi-structured pattern torch's GPU kernels run."""
    if m % 4 == 0:
        return n <= 2
    if 4 % m == 0:
        return n * (4 // m) <= 2
    return False
