"""One-shot pruning from calibration data, layer by layer (the shared part of Wanda and SparseGPT).

Wanda (Sun et al. 2023) and SparseGPT (Frantar & Alistarh 2023) prune a trained model once, from
the activations of a small calibration set, with no gradient.  Both walk the encoder block by
block: the inputs of block ``i`` are the outputs of blocks ``0 .. i-1`` *after* those were
pruned, so each block's pruning sees (and, for SparseGPT, compensates) the error of the ones
before it.  :class:`OneShotMethod` owns that pass; a subclass says what statistics a prunable
linear collects from its inputs (:meth:`OneShotMethod._new_stats`,
:meth:`OneShotMethod._accumulate`) and how it prunes one weight from them
(:meth:`OneShotMethod._prune_target`).

The pass, for any BERT-like encoder (blocks found by FQN: ``...layer.3.``, ``...layers.3.``,
``...h.3.``, ``...block.3.``, as :func:`rayprune.models.prunable_targets` names them):

1. ``context.calibration_batches(calibration_samples, seed)`` gives model-input batches from the
   train split.  One forward per batch runs to the first block, whose inputs (hidden states plus
   every other argument, the attention mask included) a pre-hook records before stopping the
   forward.
2. For each block in model order: forward hooks on its prunable linears collect statistics while
   the block runs on the recorded inputs; the hooks are removed; each linear is pruned; the
   block runs again, now pruned, and its outputs become the next block's inputs.
3. Prunable linears outside any block (only with a custom scope) are done last, from full
   forwards of the already pruned model.

Padding tokens (``attention_mask == 0``) are left out of the statistics: an encoder's padded
positions carry no input the model uses (the LLM papers have no padding).  Every hook is removed
in a ``finally``, and the model's train/eval mode is restored.

**In a trial** the pass runs once, at the schedule's first masking step (``schedule.kind``
``oneshot``, the default; ``start`` 0 = before any fine-tuning, the pass then runs inside
:meth:`prepare`, as RPP's ``mlm`` stage does), and the rest of the budget fine-tunes with the
mask frozen.  A later :meth:`step` asking for more sparsity prunes further by the method's
``score`` from the statistics kept from the pass (Wanda's ``|W|·‖X_j‖``, SparseGPT's
``w² / [H⁻¹]²_jj``) and never brings an entry back, whatever ``mask_policy`` says (there is one
masking step, so the two policies give the same mask).

Cost (measured on MiniLM-L6, 128 calibration samples; benchmarks/RESULTS.md "One-shot pass"):
the pass is two block forwards per block plus the per-layer pruning.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from rayprune.methods import masks as mask_ops
from rayprune.methods.base import MaskPolicy, MethodOptions, PruningMethod, TrainingContext, mask_policy_option

__all__ = ["OneShotMethod", "OneShotOptions", "encoder_blocks"]

#: Schedule kinds a one-shot method runs under (one masking step).
ONE_SHOT_KINDS = ("oneshot", "constant")
# The FQN of the encoder block holding a parameter: `...layer.3`, `...layers.3`, `...h.3`, `...block.3`.
_BLOCK = re.compile(r"^(.*?(?:^|\.)(?:layer|layers|h|block)\.\d+)\.")


@dataclass(kw_only=True)
class OneShotOptions(MethodOptions):
    """Options of the one-shot methods.

    Attributes:
        calibration_samples: training examples fed through the model to collect the layer
            statistics (both papers: 128).
        mask_policy: accepted for uniformity; a one-shot method has one masking step, so both
            policies give the same mask.
    """

    mask_policy: MaskPolicy = mask_policy_option(
        "persistent", "one masking step: both policies give the same mask"
    )
    calibration_samples: int = field(
        default=128,
        metadata={"help": "training examples in the calibration set (papers: 128)", "minimum": 1},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        n = self.calibration_samples
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"calibration_samples must be an integer >= 1, got calibration_samples={n!r}")


def encoder_blocks(fqns: Iterable[str], model: nn.Module) -> list[tuple[str | None, list[str]]]:
    """Group target FQNs by the encoder block that holds them, blocks in model order:
    ``[(block_fqn, [target, ...]), ...]``, then ``(None, [targets outside any block])`` if any."""
    by_block: dict[str | None, list[str]] = {}
    for fqn in fqns:
        match = _BLOCK.match(fqn)
        by_block.setdefault(match.group(1) if match else None, []).append(fqn)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    blocks = sorted((b for b in by_block if b is not None), key=lambda b: order.get(b, len(order)))
    out: list[tuple[str | None, list[str]]] = [(b, by_block[b]) for b in blocks]
    if None in by_block:
        out.append((None, by_block[None]))
    return out


class _Captured(Exception):
    """Raised by the first block's pre-hook once its inputs are recorded (stops the forward)."""


def _module_of(fqn: str) -> str:
    return fqn.rsplit(".", 1)[0]


def _first_output(out: Any) -> torch.Tensor:
    """A block's hidden states, whether it returns a tensor or a tuple (older transformers)."""
    return out[0] if isinstance(out, (tuple, list)) else out


class OneShotMethod(PruningMethod):
    """Base of the calibration-based one-shot methods (module docstring).  Subclasses implement
    :meth:`_new_stats`, :meth:`_accumulate`, :meth:`_prune_target` and :meth:`score`.

    When the trial calls it:

    * :meth:`prepare`: masks; when the schedule's first masking step is step 0 and the trial is
      not resuming, the whole calibration pass (pruning before any fine-tuning).
    * :meth:`step`: at the schedule's first masking step, the pass if it has not run; later
      (never in a trial, whose ``oneshot`` schedule masks once) persistent growth by ``score``.
    """

    Options = OneShotOptions
    one_shot = True
    schedule_defaults = {"kind": "oneshot", "start": 0.0}

    def prepare(self, model: nn.Module, targets: Sequence[str], context: TrainingContext) -> None:
        super().prepare(model, targets, context)
        schedule = context.schedule
        kind = getattr(schedule, "kind", None)
        if schedule is not None and kind not in ONE_SHOT_KINDS:
            raise ValueError(
                f"{type(self).__name__} prunes once from calibration data: schedule.kind must be one "
                f"of {ONE_SHOT_KINDS}, got kind={kind!r}"
            )
        modules = dict(model.named_modules())
        for fqn in self.params:
            module = modules.get(_module_of(fqn))
            if not (isinstance(module, nn.Linear) and fqn.endswith(".weight")):
                raise ValueError(f"{type(self).__name__} prunes nn.Linear weights; target {fqn!r} is not one")
        self._done = False
        self._stats_kept: dict[str, torch.Tensor] = {}
        self._report: dict[str, float] = {}
        if schedule is not None and not context.resuming and context.total_steps >= 1:
            first, _ = schedule.steps(context.total_steps)
            sparsity = schedule.sparsity_at(first, context.total_steps)
            if first == 0 and sparsity > 0:
                self._one_shot(sparsity)

    # ------------------------------------------------------------------ subclass hooks
    def _new_stats(self, fqn: str, weight: torch.Tensor) -> Any:
        """Empty statistics for target ``fqn`` (called once per target per pass)."""
        raise NotImplementedError

    def _accumulate(self, stats: Any, x: torch.Tensor) -> Any:
        """Add the inputs ``x`` (``(tokens, in_features)``, float32, padding removed) of one
        calibration batch to ``stats``; returns the updated statistics."""
        raise NotImplementedError

    def _prune_target(self, fqn: str, stats: Any, sparsity: float) -> None:
        """Prune ``self.params[fqn]`` to ``sparsity`` (or the N:M pattern) from ``stats``:
        update ``self.masks[fqn]`` (only ever removing entries) and the weight in place, and keep
        in ``self._stats_kept[fqn]`` the CPU-sized vector :meth:`score` needs afterwards."""
        raise NotImplementedError

    # ------------------------------------------------------------------ selection
    def _select_keep(self, score: torch.Tensor, sparsity: float) -> torch.Tensor:
        """The kept entries of one ``(out, in)`` weight by ``score``: the N:M pattern, else the
        ``round(sparsity * in)`` lowest of each row (``selection="row"``) or the
        ``round(sparsity * numel)`` lowest of the tensor (``"layer"``)."""
        if self._nm is not None:
            n, m = self._nm
            return mask_ops.nm_keep(score, n, m)
        if getattr(self.options, "selection", "layer") == "row":
            cols = score.shape[-1]
            return mask_ops.keep_top_in_groups(score, cols, cols - int(round(sparsity * cols)))
        return mask_ops.select_lowest_k_per_tensor({"w": score}, sparsity)["w"]

    def _check_pattern_request(self, sparsity: float) -> None:
        if self._nm is not None:
            mask_ops.check_pattern_target(self.options.sparsity_pattern, sparsity)

    # ------------------------------------------------------------------ the pass
    @torch.no_grad()
    def _one_shot(self, sparsity: float) -> None:
        """The layer-by-layer calibration pass (module docstring) at ``sparsity``."""
        self._check_pattern_request(sparsity)
        ctx, model = self.context, self.model
        if ctx is None or ctx.calibration_batches is None:
            raise ValueError(
                f"{type(self).__name__} prunes from calibration data, and the trial gave none "
                "(TrainingContext.calibration_batches is None)"
            )
        started = time.perf_counter()
        self._layer_errors: list[float] = []
        samples = int(self.options.calibration_samples)
        batches = [dict(b) for b in ctx.calibration_batches(samples, int(ctx.seed))]
        if not batches:
            raise ValueError(f"{type(self).__name__}: calibration_batches({samples}) yielded no batch")
        for batch in batches:
            batch.pop("labels", None)
        modules = dict(model.named_modules())
        groups = encoder_blocks(self.params, model)
        handles: list[Any] = []
        token_mask: list[torch.Tensor | None] = [None]  # the current batch's attention mask
        stats: dict[str, Any] = {}
        was_training = model.training
        model.eval()  # no dropout while measuring activations

        def collect(fqn: str):
            def hook(module, inputs, output):
                x = inputs[0]
                mask = token_mask[0]
                if mask is not None and tuple(x.shape[:-1]) == tuple(mask.shape):
                    x = x[mask]  # (real tokens, in)
                stats[fqn] = self._accumulate(stats[fqn], x.reshape(-1, x.shape[-1]).float())
            return hook

        def hook_targets(fqns: Sequence[str]) -> None:
            for fqn in fqns:
                stats[fqn] = self._new_stats(fqn, self.params[fqn])
                handles.append(modules[_module_of(fqn)].register_forward_hook(collect(fqn)))

        def unhook() -> None:
            while handles:
                handles.pop().remove()

        def prune(fqns: Sequence[str]) -> None:
            for fqn in fqns:
                self._prune_target(fqn, stats.pop(fqn), sparsity)

        try:
            block_groups = [(b, f) for b, f in groups if b is not None]
            inputs: list[tuple[tuple, dict]] = []
            if block_groups:
                first = modules[block_groups[0][0]]

                def capture(module, args, kwargs):
                    inputs.append((args, kwargs))
                    raise _Captured

                handles.append(first.register_forward_pre_hook(capture, with_kwargs=True))
                for batch in batches:
                    try:
                        model(**batch)
                    except _Captured:
                        pass
                unhook()
            for block_name, fqns in block_groups:
                block = modules[block_name]
                hook_targets(fqns)
                for batch, (args, kwargs) in zip(batches, inputs):
                    token_mask[0] = self._token_mask(batch)
                    block(*args, **kwargs)
                unhook()
                prune(fqns)
                # The pruned block's outputs are the next block's inputs.
                for i, (args, kwargs) in enumerate(inputs):
                    out = _first_output(block(*args, **kwargs))
                    if args:
                        inputs[i] = ((out, *args[1:]), kwargs)
                    else:
                        inputs[i] = ((), {**kwargs, "hidden_states": out})
            rest = [f for b, fqns in groups if b is None for f in fqns]
            if rest:
                hook_targets(rest)
                for batch in batches:
                    token_mask[0] = self._token_mask(batch)
                    model(**batch)
                unhook()
                prune(rest)
        finally:
            unhook()
            model.train(was_training)
        self._done = True
        self.apply_masks()
        self._report = {
            "oneshot_seconds": time.perf_counter() - started,
            "calibration_samples_seen": float(sum(int(b["input_ids"].shape[0]) for b in batches if "input_ids" in b)),
            **self._pass_report(),
        }

    def _pass_report(self) -> dict[str, float]:
        """Numbers about the pass that :meth:`diagnostics` adds (subclasses)."""
        return {}

    @staticmethod
    def _token_mask(batch: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        mask = batch.get("attention_mask")
        return None if mask is None else mask.bool()

    # ------------------------------------------------------------------ lifecycle
    @torch.no_grad()
    def step(self, sparsity: float) -> dict[str, float]:
        """The calibration pass at ``sparsity`` if it has not run (the schedule's one masking
        step when it does not start at step 0); afterwards persistent growth by :meth:`score`
        to ``sparsity`` (nothing changes at or below the reached sparsity; under N:M never
        beyond the pattern)."""
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got sparsity={sparsity}")
        if not self._done:
            if sparsity > 0:
                self._one_shot(sparsity)
            return self.target_sparsity()
        for fqn, param in self.params.items():
            score = self.score(fqn, param.detach()).float().masked_fill(~self.masks[fqn], float("-inf"))
            self.masks[fqn] &= self._select_keep(score, self._pattern_request(sparsity))
        self.apply_masks()
        return self.target_sparsity()

    def diagnostics(self) -> dict[str, float]:
        """``oneshot_seconds`` (wall time of the calibration pass) and
        ``calibration_samples_seen``; plus the base's N:M numbers."""
        return {**super().diagnostics(), **self._report}

    def finalize(self) -> nn.Module:
        self._stats_kept = {}
        return super().finalize()

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["one_shot"] = {
            "done": self._done,
            "stats": {k: v.detach().cpu().clone() for k, v in self._stats_kept.items()},
            "report": dict(self._report),
        }
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        saved = state.get("one_shot")
        if saved is None:
            raise ValueError(f"checkpoint has no one-shot state for {type(self).__name__}")
        self._done = bool(saved["done"])
        device = next(iter(self.params.values())).device
        self._stats_kept = {k: v.to(device) for k, v in saved["stats"].items()}
        self._report = {k: float(v) for k, v in saved["report"].items()}
