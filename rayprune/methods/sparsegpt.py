"""SparseGPT (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be Accurately
Pruned in One-Shot"): one-shot pruning that updates the remaining weights to compensate.

For a linear layer with calibration inputs ``X`` (``in x tokens``) the layer-wise problem is
``min ‖WX − ŴX‖²`` over ``Ŵ`` with the mask's zeros.  SparseGPT solves it approximately with
Optimal Brain Surgeon updates, column by column (:func:`sparsegpt_prune`):

* ``H = 2XXᵀ / tokens``, dampened by ``dampening · mean(diag H)`` on the diagonal (paper: 1%);
  inputs that are never active (``H_jj = 0``) get ``H_jj = 1`` so that ``H`` stays invertible.
* ``U``, the upper Cholesky factor of ``H⁻¹`` (``H⁻¹ = UᵀU``): row ``j`` of ``U`` restricted to
  the columns ``>= j`` is the OBS update direction once columns ``< j`` are fixed.
* Columns are processed in lazy blocks of ``blocksize`` (paper: 128): inside a block every pruned
  weight's error ``(w − q)/U_jj`` updates the block's later columns at once; the columns after the
  block get all of the block's errors in one matrix product.
* The mask is chosen per block (the paper's adaptive mask selection): in each block of columns
  the ``sparsity`` share of weights with the lowest ``w² / U_jj²`` across all rows; under N:M, in
  each row, the N of every M consecutive columns with the highest ``w² / U_jj²``, chosen when the
  group is reached (with the updates of earlier columns in).

The pass is layer by layer with each block's inputs from the already pruned (and updated) blocks
before it (:mod:`rayprune.methods.oneshot`).  Whether SparseGPT works on BERT encoders was asked
upstream and not answered (IST-DASLab/sparsegpt#23); the search can tell on the user's task.
Diagnostics add ``reconstruction_error``: the mean over layers of ``‖(W−Ŵ)X‖² / ‖WX‖²`` on the
calibration inputs, from ``H``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from rayprune.methods import masks as mask_ops
from rayprune.methods.oneshot import OneShotMethod, OneShotOptions

__all__ = ["SparseGPTMethod", "sparsegpt_prune"]


def _inverse_factor(hessian: torch.Tensor, dampening: float) -> torch.Tensor:
    """``U`` with ``(H + λI)⁻¹ = UᵀU`` (upper triangular), ``λ = dampening · mean(diag H)``.
    Dead inputs get ``H_jj = 1``; if the Cholesky factorisation fails, λ grows tenfold (at most
    five times) before giving up."""
    h = hessian.clone().float()
    diag = h.diagonal()
    diag[diag == 0] = 1.0
    damp = dampening * float(diag.mean())
    eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    for attempt in range(6):
        lower, info = torch.linalg.cholesky_ex(h + damp * eye)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(lower)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if int(info) == 0:
                return upper
        damp = max(damp, 1e-8) * 10.0
    raise RuntimeError("SparseGPT: the dampened Hessian is not positive definite even at 1e5 x dampening")


def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float,
    *,
    nm: tuple[int, int] | None = None,
    blocksize: int = 128,
    dampening: float = 0.01,
    keep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SparseGPT on one ``(out, in)`` weight (module docstring).

    Args:
        weight: the dense weight (not modified).
        hessian: ``(in, in)`` ``2XXᵀ/tokens`` of the calibration inputs.
        sparsity: share of each block's weights pruned (ignored under ``nm``).
        nm: ``(N, M)``: keep N of every M consecutive columns of each row instead.
        blocksize: columns per lazy block (rounded down to a multiple of M under ``nm``).
        dampening: λ as a fraction of the mean of ``diag H``.
        keep: entries that must stay pruned (``False``), e.g. an earlier mask; ``None`` = none.

    Returns:
        ``(new weight, keep mask, diag U)``: the updated weight (zero where pruned, in the input
        weight's dtype), the bool mask and the ``(in,)`` diagonal of ``U`` (for the saliency
        ``w² / U_jj²``).
    """
    rows, cols = weight.shape
    w = weight.detach().clone().float()  # (rows, cols), updated in place
    upper = _inverse_factor(hessian, dampening)  # (cols, cols)
    d = upper.diagonal()  # (cols,)
    forced = torch.ones_like(w, dtype=torch.bool) if keep is None else keep.to(torch.bool)
    out_keep = torch.ones_like(w, dtype=torch.bool)
    if nm is not None:
        blocksize = max(blocksize - blocksize % nm[1], nm[1])
    for lo in range(0, cols, blocksize):
        hi = min(lo + blocksize, cols)
        block = w[:, lo:hi]  # view: updates land in w
        u = upper[lo:hi, lo:hi]  # (b, b)
        errors = torch.zeros(rows, hi - lo, dtype=w.dtype, device=w.device)  # (rows, b)
        block_keep = out_keep[:, lo:hi]  # view
        if nm is None:
            saliency = block.pow(2) / d[lo:hi].pow(2).reshape(1, -1)  # (rows, b)
            saliency = saliency.masked_fill(~forced[:, lo:hi], float("-inf"))
            k = int(round(sparsity * saliency.numel()))
            block_keep.copy_(mask_ops.select_lowest_k_per_tensor({"b": saliency}, k / saliency.numel())["b"]
                             if k else torch.ones_like(block_keep))
        for j in range(hi - lo):
            if nm is not None and j % nm[1] == 0:
                group = slice(j, j + nm[1])
                saliency = block[:, group].pow(2) / d[lo:hi][group].pow(2).reshape(1, -1)  # (rows, M)
                saliency = saliency.masked_fill(~forced[:, lo:hi][:, group], float("-inf"))
                block_keep[:, group] = mask_ops.nm_keep(saliency, *nm)
            column = block[:, j]  # (rows,)
            pruned = column * (~block_keep[:, j])
            err = pruned / u[j, j]  # (rows,), zero where kept
            # OBS: remove the pruned part and spread its error over the block's later columns.
            block[:, j:] -= err.reshape(-1, 1) * u[j, j:].reshape(1, -1)
            errors[:, j] = err
        # Lazy update of every column after the block.
        if hi < cols:
            w[:, hi:] -= errors @ upper[lo:hi, hi:]
    w.mul_(out_keep)
    return w.to(weight.dtype), out_keep, d


@dataclass(kw_only=True)
class SparseGPTOptions(OneShotOptions):
    """SparseGPT's options (paper defaults): ``dampening`` 0.01, ``blocksize`` 128,
    ``calibration_samples`` 128; ``selection`` is ``layer`` (each layer at the target, the mask
    chosen per column block); ``sparsity_pattern``; ``mask_policy``."""

    selection: Literal["layer"] = field(
        default="layer", metadata={"help": "layer: every layer at the target, mask chosen per column block"}
    )
    dampening: float = field(
        default=0.01,
        metadata={"help": "added to diag(H), as a fraction of its mean (paper: 1%)", "exclusive_minimum": 0.0},
    )
    blocksize: int = field(
        default=128, metadata={"help": "columns per lazy update block (paper: 128)", "minimum": 1}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.dampening > 0:
            raise ValueError(f"dampening must be > 0, got dampening={self.dampening}")
        b = self.blocksize
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ValueError(f"blocksize must be an integer >= 1, got blocksize={b!r}")


class SparseGPTMethod(OneShotMethod):
    """SparseGPT: one-shot OBS pruning with weight updates from calibration data (module docstring)."""

    Options = SparseGPTOptions
    description = "SparseGPT (Frantar & Alistarh 2023): one-shot OBS prune + update, then fine-tune"

    def _new_stats(self, fqn: str, weight: torch.Tensor) -> Any:
        cols = weight.shape[1]
        return [torch.zeros(cols, cols, dtype=torch.float32, device=weight.device), 0]

    def _accumulate(self, stats: Any, x: torch.Tensor) -> Any:
        stats[0].addmm_(x.T, x)  # Σ x xᵀ, (in, in)
        stats[1] += x.shape[0]
        return stats

    def _prune_target(self, fqn: str, stats: Any, sparsity: float) -> None:
        gram, tokens = stats
        hessian = gram.mul_(2.0 / max(tokens, 1))  # (in, in)
        param = self.params[fqn]
        before = param.detach().float().clone()
        new, keep, d = sparsegpt_prune(
            param.detach(), hessian, sparsity, nm=self._nm, blocksize=int(self.options.blocksize),
            dampening=float(self.options.dampening), keep=self.masks[fqn],
        )
        self.masks[fqn] &= keep
        param.data.copy_(new)
        self._stats_kept[fqn] = d.float()
        # ‖ΔW X‖² / ‖W X‖² = tr(ΔW H ΔWᵀ) / tr(W H Wᵀ) on the calibration inputs.
        delta = new.float() - before  # (out, in)
        err = float((delta @ hessian * delta).sum())
        ref = float((before @ hessian * before).sum())
        self._layer_errors.append(err / ref if ref > 0 else 0.0)

    def _pass_report(self) -> dict[str, float]:
        """``reconstruction_error``: mean over layers of ``‖(W−Ŵ)X‖² / ‖WX‖²``."""
        errors = self._layer_errors
        return {"reconstruction_error": sum(errors) / len(errors)} if errors else {}

    def score(self, fqn: str, weight: torch.Tensor) -> torch.Tensor:
        """The OBS saliency ``w² / U_jj²`` with ``U`` from the calibration pass."""
        d = self._stats_kept.get(fqn)
        if d is None:
            raise RuntimeError(f"SparseGPTMethod.score({fqn!r}) before the calibration pass")
        return weight.detach().float().pow(2) / d.pow(2).reshape(1, -1)
