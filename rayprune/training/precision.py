"""A trial's numeric precision and the device plumbing that goes with it.

``training.precision`` picks how the trial loop runs its forward passes and losses:

* ``fp32``: no autocast.
* ``bf16``: ``torch.autocast`` to bfloat16.  bfloat16 has float32's exponent range, so gradients
  neither underflow nor overflow and no loss scaling is needed.
* ``fp16``: autocast to float16 plus a :class:`torch.amp.GradScaler`: the loss is multiplied
  by a large factor before backward (float16's small range would flush tiny gradients to
  zero), gradients are divided back before anything reads them, and a step whose gradients
  overflowed is skipped while the factor shrinks.
* ``auto`` (the default): bf16 on a CUDA device that supports it (Ampere and later), fp16 on
  an older CUDA device, fp32 on the CPU.  CPU autocast only pays off on CPUs with native
  bfloat16 matrix units (AVX512-BF16/AMX); elsewhere it converts every weight on every
  forward and runs slower than float32, so the CPU default stays float32 and bf16 on the CPU is
  an explicit choice (the test suite uses it to exercise the autocast path without a GPU).

Weights, optimizer moments and every method's statistics stay float32 in all modes (autocast
casts per operation, the parameters are never converted), so masks, scores and checkpoints
do not depend on the precision.  Evaluation runs outside autocast: the reported metrics are
those of the float32 weights that export writes.

On CUDA the trial also gets TF32 matmuls for whatever still runs in float32, fused AdamW,
pinned host batches copied with ``non_blocking=True``, and optionally ``torch.compile``
(``training.compile: true``).
"""

from __future__ import annotations

import contextlib
import gc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import torch

__all__ = ["PRECISIONS", "Precision", "resolve_precision", "release_device_memory"]

#: Values of ``training.precision``.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_SCALER_FILE = "grad_scaler.pt"


def resolve_precision(requested: str, device: str) -> str:
    """The concrete precision (``fp32``, ``bf16`` or ``fp16``) for ``requested`` on ``device``.

    Raises:
        ValueError: an unknown value, or ``bf16`` on a CUDA device without bfloat16 support.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"training.precision must be one of {list(PRECISIONS)}, got {requested!r}")
    cuda = device.startswith("cuda")
    if requested == "auto":
        if not cuda:
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if requested == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"training.precision: bf16 needs a GPU with bfloat16 support, and "
            f"{torch.cuda.get_device_name()} has none; use fp16 (or auto)"
        )
    return requested


@dataclass
class Precision:
    """How one trial runs its steps: autocast, loss scaling, optimizer and batch transfer.

    The trial loop calls, per step: :meth:`to_device` on the batch, the forward and the loss
    hooks inside :meth:`autocast`, :meth:`backward` on the task loss, :meth:`unscale` (before
    clipping and before the method reads ``.grad``, so both see true gradients),
    :meth:`backward_extra` on the method's extra loss, and :meth:`step`.

    Attributes:
        name: ``fp32``, ``bf16`` or ``fp16`` (what the trial reports as ``precision``).
        device: ``cuda`` or ``cpu``.
        scaler: the gradient scaler (fp16 only).
        skipped_steps: optimizer steps skipped because fp16 gradients overflowed.
    """

    name: str
    device: str
    scaler: torch.amp.GradScaler | None = None
    skipped_steps: int = 0
    _task_finite: bool = field(default=True, repr=False)
    _task_leaves: list = field(default_factory=list, repr=False)

    @classmethod
    def create(cls, requested: str, device: str) -> "Precision":
        """Resolve ``requested`` (a ``training.precision`` value) for ``device``; on CUDA also
        switch float32 matmuls to TF32 for this process."""
        name = resolve_precision(requested, device)
        if device.startswith("cuda"):
            torch.set_float32_matmul_precision("high")
        scaler = torch.amp.GradScaler(device.split(":")[0]) if name == "fp16" else None
        return cls(name=name, device=device, scaler=scaler)

    @property
    def on_cuda(self) -> bool:
        return self.device.startswith("cuda")

    # ------------------------------------------------------------------ forward
    def autocast(self):
        """Context for the forward passes and loss hooks of a training step (not the backward)."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.split(":")[0], dtype=_DTYPES[self.name])

    def to_device(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Move a host batch to the device; on CUDA through pinned memory without blocking the
        host, so Python can queue the step's kernels while the copy runs."""
        if not self.on_cuda:
            return {k: v.to(self.device) for k, v in batch.items()}
        return {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in batch.items()}

    def optimizer(self, params: list[torch.Tensor], *, lr: float, weight_decay: float) -> torch.optim.AdamW:
        """AdamW over ``params``, with torch's fused kernel when every tensor is a float32/bf16
        tensor on the trial's device (CUDA, or CPU without an fp16 loss scaler).

        On CPU the fused kernel matters as much as on a GPU: for MiniLM (22.7M parameters, half
        of them the embedding table) one AdamW step took 0.24 s with the default ``foreach``
        implementation and 0.05 s fused (torch 2.13, one thread), against ~0.55 s for the
        forward and backward of a 16-sentence batch (``benchmarks/RESULTS.md``, "Fused AdamW").
        """
        device = torch.device(self.device)
        fused = (self.on_cuda or self.scaler is None) and all(
            p.device.type == device.type and p.is_floating_point() for p in params)
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **({"fused": True} if fused else {}))

    # ------------------------------------------------------------------ backward and step
    def backward(self, loss: torch.Tensor, *, retain_graph: bool = False) -> None:
        """Backward of the task loss (scaled under fp16)."""
        if self.scaler is None:
            loss.backward(retain_graph=retain_graph)
            return
        self._task_leaves = _graph_leaves(loss)
        self.scaler.scale(loss).backward(retain_graph=retain_graph)

    def unscale(self, optimizer: torch.optim.Optimizer) -> bool:
        """Turn the optimizer's gradients into true gradients; False when fp16 gradients
        overflowed (then the method must not read them and the step is skipped)."""
        if self.scaler is None:
            return True
        optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
        outside = [leaf for leaf in self._task_leaves if id(leaf) not in optimized]
        if outside:  # unscale_ covers the optimizer's tensors only; these would stay x scale
            raise RuntimeError(
                f"training.precision fp16: the task loss has gradients for {len(outside)} tensor(s) "
                f"outside the optimizer (shapes {[tuple(t.shape) for t in outside[:3]]}); a method's "
                f"trainable tensors must come from extra_parameters(), or use bf16/fp32"
            )
        self.scaler.unscale_(optimizer)
        self._task_finite = _all_finite(p.grad for group in optimizer.param_groups for p in group["params"])
        return self._task_finite

    def backward_extra(self, extra: torch.Tensor) -> bool:
        """Add the extra loss's gradient to every tensor it reaches; False when it overflowed
        under fp16 (nothing is added then and the step is skipped).

        Under fp16 the task gradients are already unscaled, so the extra loss cannot simply be
        back-propagated scaled into the same ``.grad``: its gradients are computed scaled
        (float16 activations would flush them to zero otherwise), divided back and added.  Its
        leaves include tensors outside the optimizer (movement scores), so they are read from
        the autograd graph."""
        if self.scaler is None:
            extra.backward()
            return True
        leaves = _graph_leaves(extra)
        scale = self.scaler.get_scale()
        grads = torch.autograd.grad(self.scaler.scale(extra), leaves, allow_unused=True)
        pairs = [(leaf, grad) for leaf, grad in zip(leaves, grads) if grad is not None]
        if not _all_finite(grad for _, grad in pairs):
            return False
        with torch.no_grad():
            for leaf, grad in pairs:
                grad = grad.to(leaf.dtype).div_(scale)
                leaf.grad = grad if leaf.grad is None else leaf.grad.add_(grad)
        return True

    def step(self, optimizer: torch.optim.Optimizer, *, finite: bool) -> None:
        """The optimizer step, skipped (and the fp16 loss scale reduced) when not ``finite``."""
        if self.scaler is None:
            optimizer.step()
            return
        if finite:
            self.scaler.step(optimizer)
            self.scaler.update()
            return
        self.skipped_steps += 1
        if not self._task_finite:  # the task gradient overflowed: the scaler skips and backs off itself
            self.scaler.step(optimizer)
            self.scaler.update()
        else:  # only the extra loss's gradient did: skip here, back off the same way
            self.scaler.update(self.scaler.get_scale() * self.scaler.get_backoff_factor())

    # ------------------------------------------------------------------ checkpoints
    def save(self, directory: Path) -> None:
        """Write the loss-scale state beside a checkpoint (fp16 only), so a resumed trial
        continues with the scale it had instead of re-learning it with skipped steps."""
        if self.scaler is not None:
            torch.save({"scaler": self.scaler.state_dict(), "skipped_steps": self.skipped_steps},
                       Path(directory) / _SCALER_FILE)

    def load(self, directory: Path) -> None:
        """Restore what :meth:`save` wrote, when the checkpoint has it."""
        path = Path(directory) / _SCALER_FILE
        if self.scaler is not None and path.is_file():
            state = torch.load(path, weights_only=True)
            self.scaler.load_state_dict(state["scaler"])
            self.skipped_steps = int(state["skipped_steps"])


def release_device_memory() -> None:
    """Free what a finished trial left in this process: Python garbage first (models, optimizer
    state held in reference cycles), then the CUDA caching allocator's unused blocks, so the
    next trial on this worker, or another trial sharing the GPU, gets that memory."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _all_finite(tensors: Iterable[torch.Tensor | None]) -> bool:
    """Whether every element of every tensor is finite (one device sync)."""
    checks = [torch.isfinite(t).all() for t in tensors if t is not None]
    return bool(torch.stack(checks).all()) if checks else True


def _graph_leaves(root: torch.Tensor) -> list[torch.Tensor]:
    """The leaf tensors ``root.backward()`` would write ``.grad`` into (its graph's
    AccumulateGrad nodes), each once."""
    leaves, seen, stack = [], set(), [root.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if variable is not None:
            leaves.append(variable)
            continue
        stack.extend(next_node for next_node, _ in node.next_functions)
    return leaves
