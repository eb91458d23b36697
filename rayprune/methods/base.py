"""The pruning-method interface: a scorer plus optional hooks, with the lifecycle in the base.

A method is mostly a *scorer* (``score(fqn, weight)``, higher = keep).  :class:`PruningMethod`
owns masks, selection, re-application, finalisation and checkpoint state, in the spirit of
``torch.ao.pruning.BaseSparsifier`` but without parametrizations, so ``state_dict`` keys never
change.

Conventions every method shares (decided once, written in the README):

* **Each method masks as its paper does** (``<method>.mask_policy``, an ordinary option whose
  default is the paper's):

  - ``persistent``: a pruned entry never comes back; ``step`` only grows the pruned set (GMP,
    GRAIN, heads+FFN, RPP).
  - ``reselect``: at every masking step up to the end of the sparsity ramp the mask is chosen
    afresh from the current scores, so an entry whose score has risen comes back (movement's
    TopK of S at every step, SEVEN's every-step mask, soft movement's ``sigmoid(S) > tau``, and
    PLATON, PINS and MGPP, whose official code zeroes weights in place and keeps no mask between
    masking events; SPEC §5.3, §7.2-7.4, §10.1).  Among entries tied at the cut the current
    mask wins, so ties never churn.

  After the ramp's last masking step (``schedule.steps``; the first one for ``constant`` /
  ``oneshot``) the mask is frozen under both policies: a later ``step`` behaves as
  ``persistent`` and the trial stops calling it anyway.

  *What a returning entry resumes from* follows the official code.  Methods that mask in the
  forward and keep the dense weights (movement, soft movement, SEVEN: ``W * M``, straight-through
  scores) set ``keeps_pruned_values``: the base stores an entry's trained value when it is
  pruned and puts it back when it returns, and :meth:`PruningMethod.pruned_values` lets the
  method read the dense value meanwhile (movement's score gradient ``grad * W`` uses it, so
  pruned entries keep learning their score as in the official straight-through estimator).
  Methods that zero in place (PLATON, PINS, MGPP, magnitude, RPP) restart a returning entry from
  0, as a zeroed weight does there; between masking events we keep the mask (the official code
  lets a zeroed weight take optimizer steps from 0 until the next masking event, a difference
  of a few learning-rate steps in that weight).
* **Masks are applied by zeroing in place** after every optimizer step (``apply_masks``), so the
  forward pass always sees ``W * M``.  No forward hooks, no ``weight_orig``.
* **Sparsity is measured** from the weights (``rayprune.measure``), never copied from a target.
* **Sparsity patterns** (``<method>.sparsity_pattern``, every unstructured method):
  ``unstructured`` (default) or ``N:M``, at most N non-zeros in every M consecutive weights along
  the input dimension of each prunable linear (2:4 is what torch's GPU kernels run).  Under N:M
  the method's own scores choose the kept N of every M, and the ramp gets there gradually: at
  every masking step the top N of each group (by the current scores) are protected
  (:func:`~rayprune.methods.masks.protect_top_n_of_m`) and the usual lowest-k selection
  (global or per tensor) runs on the rest, so each intermediate mask is N:M-compatible and the
  ramp's last step, at ``1 - N/M``, prunes exactly the N:M complement.  Targets whose shape the
  GPU kernel does not take (:func:`~rayprune.methods.masks.nm_unfit_reason`) stay dense and are
  listed in ``dense_layers``; ``diagnostics`` reports ``nm_violations`` and ``nm_sparsity``.

How the trial loop (``rayprune.training.loop.run_training``) drives a method, per training
step: the forward (hidden states if ``needs_hidden_states``), ``task_loss`` (``None``: the
model's own loss) and ``extra_loss``, the task loss's backward and its gradient clipping; then
:func:`rayprune.training.loop.method_step_hooks` runs the rest, from ``after_backward`` to
``apply_masks``.  That function is the single definition of the hooks' order (and of what an
fp16 overflow skips); the tests that simulate training steps call it too, so they cannot drift
from the trial.

Clipping applies to the task gradient alone, before ``after_backward``: what a method adds on
purpose (MGPP's prior gradient, whose spike term is ~1/(n*v0) on pruned weights; penalties through
``extra_loss``) is not rescaled by it, and importance statistics read clipped task gradients as
in PINS' official step order.

``context`` (a :class:`TrainingContext`) is owned by the trial and updated every step, so a
method reads the current step and learning rate from it instead of reaching into the loop.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Literal, Mapping, Sequence

import torch
from torch import nn

from rayprune.methods import masks as mask_ops
from rayprune.methods.masks import UNSTRUCTURED, parse_sparsity_pattern

__all__ = [
    "PruningMethod",
    "MethodOptions",
    "TrainingContext",
    "MaskPolicy",
    "MASK_POLICIES",
    "mask_policy_option",
]

MaskPolicy = Literal["persistent", "reselect"]
MASK_POLICIES = ("persistent", "reselect")


def mask_policy_option(default: str, why: str) -> Any:
    """The ``mask_policy`` field of a method's ``Options`` with the paper's ``default`` and a
    help text saying ``why`` (shown by ``rayprune methods`` and the search-space schema)."""
    return field(
        default=default,
        metadata={
            "help": "persistent: a pruned weight stays pruned; reselect: masks re-chosen from "
            f"the current scores at every masking step until the ramp ends ({default}: {why})"
        },
    )


@dataclass(kw_only=True)
class MethodOptions:
    """Options every unstructured method has.  Subclasses add their own fields (keyword-only).

    Attributes:
        selection: ``global`` ranks all prunable weights together (one threshold, as PLATON,
            PINS, MGPP, SEVEN do); ``layer`` prunes each tensor to the same sparsity.
        mask_policy: ``persistent`` (a pruned entry never comes back) or ``reselect`` (the mask
            is re-chosen from the current scores at every masking step until the ramp ends);
            each method's ``Options`` sets its paper's default (module docstring).
        sparsity_pattern: ``unstructured`` or ``N:M`` (module docstring); structured methods
            accept only ``unstructured``.
    """

    selection: Literal["global", "layer"] = "global"
    mask_policy: MaskPolicy = mask_policy_option("persistent", "masks only grow")
    sparsity_pattern: str = field(
        default=UNSTRUCTURED,
        metadata={
            "help": "unstructured, or N:M with N < M (e.g. '2:4', quoted in YAML): at most N "
            "non-zeros in every M consecutive weights along each linear's input dimension, "
            "chosen by the method's scores; the target sparsity must then be 1 - N/M",
            "validate": parse_sparsity_pattern,
            "pattern": "^(unstructured|[0-9]+:[0-9]+)$",
        },
    )

    def __post_init__(self) -> None:
        allowed = typing.get_args(typing.get_type_hints(type(self))["selection"])
        if self.selection not in allowed:
            raise ValueError(f"selection must be one of {allowed}, got selection={self.selection!r}")
        if self.mask_policy not in MASK_POLICIES:
            raise ValueError(
                f"mask_policy must be one of {MASK_POLICIES}, got mask_policy={self.mask_policy!r}"
            )
        parse_sparsity_pattern(self.sparsity_pattern)


@dataclass
class TrainingContext:
    """What the trial tells a method about the run; the trial updates ``step`` and
    ``learning_rate`` before each step's hooks fire.

    Attributes:
        total_steps: optimizer steps in the whole run.
        num_train_examples: size of the training set (MGPP scales its prior by 1/n).
        num_labels: classifier outputs (1 for regression).
        is_regression: STS-B-like tasks; distilling methods skip the KD term there.
        step: current 0-based optimizer step.
        learning_rate: current learning rate of the weights (PINS' eta).
        evaluate_selection: returns the task metric (higher is better) of a model on the
            *selection split* carved from the training data, never on the split the search
            objective is measured on.  ``None`` when the trial has no selection split.
        tokenizer: the model's tokenizer (for methods with a stage of their own, RPP's ``mlm``).
        unlabeled_texts: the task's training text without labels (RPP's ``mlm`` corpus).
        max_seq_length: the task's maximum sequence length.
        device: where the model lives.
        schedule: the run's sparsity schedule (MGPP anneals its prior over the ramp).
        resuming: the trial restores a checkpoint right after ``prepare`` (skip one-off stages).
        seed: the trial's seed.
        task: the trial's :class:`~rayprune.tasks.base.Task` (distilling methods ask it for the
            soft-target loss of its head's outputs, e.g. start/end logits for QA).
        calibration_batches: ``calibration_batches(num_samples, seed)`` yields model-input dicts
            (``input_ids``, ``attention_mask``, ``token_type_ids``..., no labels) on the model's
            device, ``num_samples`` training examples in all, drawn with ``seed``; one-shot
            methods (Wanda, SparseGPT) read their calibration set from it.  ``None``: no
            calibration data (a one-shot method then refuses to prune).
    """

    total_steps: int
    num_train_examples: int = 0
    num_labels: int = 2
    is_regression: bool = False
    step: int = 0
    learning_rate: float = 0.0
    evaluate_selection: Callable[[nn.Module], float] | None = None
    tokenizer: Any = None
    unlabeled_texts: Sequence[str] = ()
    max_seq_length: int = 128
    device: str = "cpu"
    schedule: Any = None
    resuming: bool = False
    seed: int = 0
    extras: dict = field(default_factory=dict)
    task: Any = None
    calibration_batches: Callable[[int, int], Iterator[dict]] | None = None


class PruningMethod:
    """Base class of every pruning method.  Subclasses implement :meth:`score` and may override
    the optional hooks; each hook's docstring says when the trial calls it.

    Class attributes:
        Options: the method's option dataclass (keyword-only, validated in ``__post_init__``).
        description: one line for ``rayprune methods``.
        needs_teacher: the trial supplies a dense fine-tuned teacher's outputs to the loss hooks.
        structured: removes whole units; ``finalize`` returns a physically smaller model and the
            target sparsity counts encoder parameters.
        needs_hidden_states: the trial runs forwards with ``output_hidden_states=True``.
        default_scope: name of the prunable-set rule in ``rayprune.models`` (e.g.
            ``encoder_linear``; PINS/PLATON add biases, SEVEN adds the pooler).
        schedule_defaults: overrides of :class:`~rayprune.methods.schedules.SparsitySchedule`
            fields that reproduce the paper (users can still override them in the space).
        keeps_pruned_values: under ``mask_policy="reselect"``, the official code masks in the
            forward and keeps the dense weights, so a returning entry resumes from the value it
            had when pruned (stored by the base); ``False``: it restarts from 0 (module
            docstring).
        one_shot: prunes once, from calibration data, at the schedule's first masking step and
            keeps the mask frozen after it (Wanda, SparseGPT); its schedule must be ``oneshot``
            or ``constant``.
    """

    Options: ClassVar[type[MethodOptions]] = MethodOptions
    description: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = False
    structured: ClassVar[bool] = False
    needs_hidden_states: ClassVar[bool] = False
    default_scope: ClassVar[str] = "encoder_linear"
    schedule_defaults: ClassVar[Mapping[str, Any]] = {}
    keeps_pruned_values: ClassVar[bool] = False
    one_shot: ClassVar[bool] = False

    def __init__(self, options: MethodOptions | None = None, **kwargs: Any) -> None:
        if options is not None and kwargs:
            raise TypeError("pass either an Options instance or keyword options, not both")
        if options is None:
            known = {f.name for f in dataclasses.fields(self.Options)}
            unknown = sorted(set(kwargs) - known)
            if unknown:
                raise ValueError(
                    f"unknown option(s) {unknown} for {type(self).__name__}; "
                    f"allowed: {sorted(known)}"
                )
            options = self.Options(**kwargs)
        elif not isinstance(options, self.Options):
            raise TypeError(
                f"{type(self).__name__} needs {self.Options.__qualname__}, got {type(options).__name__}"
            )
        self.options = options
        # (N, M) under an N:M pattern, else None.
        self._nm = parse_sparsity_pattern(getattr(options, "sparsity_pattern", UNSTRUCTURED))
        if self._nm is not None and self.structured:
            raise ValueError(
                f"sparsity_pattern={options.sparsity_pattern!r}: {type(self).__name__} removes "
                f"whole units; N:M patterns apply to unstructured methods only (use 'unstructured')"
            )
        # Targets an N:M pattern leaves dense, with the reason (filled by prepare).
        self.dense_layers: dict[str, str] = {}
        self.model: nn.Module | None = None
        self.context: TrainingContext | None = None
        self.params: dict[str, nn.Parameter] = {}
        self.masks: dict[str, torch.Tensor] = {}
        # Trained values of pruned entries (zero where kept); only with keeps_pruned_values
        # under reselect, allocated at the first pruning.
        self._pruned_values: dict[str, torch.Tensor] = {}
        # Reselection bookkeeping for diagnostics(): entries whose mask flipped at the last
        # reselecting step, and returns summed over the run.
        self._mask_changed_last = 0
        self._returned_total = 0

    # ------------------------------------------------------------------ lifecycle
    def prepare(self, model: nn.Module, targets: Sequence[str], context: TrainingContext) -> None:
        """Resolve the target parameter FQNs and create all-ones masks.  Called once by the
        trial after the model is loaded and before the first step.  Subclasses that keep
        statistics override this, call ``super().prepare(...)`` and allocate their buffers.

        Under an N:M ``sparsity_pattern`` the targets whose shape no GPU kernel takes are dropped
        here (they stay dense) and recorded in ``dense_layers`` with the reason."""
        named = dict(model.named_parameters())
        missing = [t for t in targets if t not in named]
        if missing:
            raise ValueError(f"prunable targets not found in the model: {missing[:5]}")
        if not targets:
            raise ValueError("no prunable targets: the scope selected no parameter")
        self.dense_layers = mask_ops.layers_left_dense(
            {t: named[t].shape for t in targets}, getattr(self.options, "sparsity_pattern", UNSTRUCTURED)
        )
        if self.dense_layers:
            targets = [t for t in targets if t not in self.dense_layers]
            if not targets:
                first = next(iter(self.dense_layers.items()))
                raise ValueError(
                    f"sparsity_pattern={self.options.sparsity_pattern!r} fits none of the "
                    f"prunable targets (e.g. {first[0]}: {first[1]})"
                )
        self.model = model
        self.context = context
        self.params = {t: named[t] for t in targets}
        self.masks = {t: torch.ones_like(p, dtype=torch.bool) for t, p in self.params.items()}
        self._pruned_values = {}
        self._mask_changed_last = self._returned_total = 0

    def score(self, fqn: str, weight: torch.Tensor) -> torch.Tensor:
        """Importance of each entry of ``weight`` (same shape; higher = keep).  Called by
        :meth:`step` for every target at every masking event.  The one required method."""
        raise NotImplementedError(f"{type(self).__name__} must implement score(fqn, weight)")

    @torch.no_grad()
    def step(self, sparsity: float) -> dict[str, float]:
        """Prune to ``sparsity`` over the prunable set: score every target and select the
        lowest-scored entries (globally or per tensor, per ``options.selection``) and zero them;
        already-pruned entries stay pruned unless the method reselects (``mask_policy``, module
        docstring).  Called by the trial when the schedule says so.

        Returns:
            the measured sparsity of every target after the step.
        """
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got sparsity={sparsity}")
        scores = {}
        for fqn, param in self.params.items():
            s = self.score(fqn, param.detach()).float()
            if s.shape != param.shape:
                raise RuntimeError(
                    f"{type(self).__name__}.score returned shape {tuple(s.shape)} for {fqn}, "
                    f"expected {tuple(param.shape)}"
                )
            scores[fqn] = s
        self._prune_lowest(scores, sparsity)
        return self.target_sparsity()

    @torch.no_grad()
    def _prune_lowest(self, scores: Mapping[str, torch.Tensor], sparsity: float) -> None:
        """Set the masks to ``sparsity`` by the lowest ``scores`` (globally or per tensor, per
        ``options.selection``) and zero the pruned entries.  Persistent (or after the ramp):
        already-pruned entries sort first, so masks only grow.  Reselecting: every entry may be
        chosen, ties at the cut keep the current mask.  For subclasses that compute their own
        scores in ``step``."""
        reselect = self._reselecting()
        if reselect:
            scores = {fqn: mask_ops.prefer_current(s, self.masks[fqn]) for fqn, s in scores.items()}
        else:
            scores = {
                fqn: s.masked_fill(~self.masks[fqn], float("-inf")) for fqn, s in scores.items()
            }
        if self._nm is not None:
            n, m = self._nm
            scores = {fqn: mask_ops.protect_top_n_of_m(s, n, m) for fqn, s in scores.items()}
            sparsity = self._pattern_request(sparsity)
        if getattr(self.options, "selection", "global") == "layer":
            new = mask_ops.select_lowest_k_per_tensor(scores, sparsity)
        else:
            new = mask_ops.select_lowest_k_global(scores, sparsity)
        if reselect:
            self._replace_masks(new)
        else:
            for fqn in self.masks:
                self.masks[fqn] &= new[fqn]
        self.apply_masks()

    def _pattern_request(self, sparsity: float) -> float:
        """Under N:M, the sparsity a selection may ask for: never above ``1 - N/M``, and exactly
        that within ``NM_TOLERANCE`` of it (so the ramp's last step is the exact pattern)."""
        if self._nm is None:
            return sparsity
        reach = mask_ops.pattern_sparsity(*self._nm)
        return reach if sparsity >= reach - mask_ops.NM_TOLERANCE else sparsity

    # ------------------------------------------------------------------ mask policy
    def _ramp_last_step(self) -> int | None:
        """The schedule's last masking step (its first for ``constant``/``oneshot``), after
        which masks are frozen; ``None`` when the run has no schedule."""
        ctx = self.context
        schedule = None if ctx is None else ctx.schedule
        if schedule is None or ctx.total_steps < 1:
            return None
        first, last = schedule.steps(ctx.total_steps)
        return first if getattr(schedule, "kind", "cubic") in ("constant", "oneshot") else last

    def _reselecting(self) -> bool:
        """Whether the current masking step may bring pruned entries back: ``reselect`` policy
        and the ramp not over yet (``context.step`` at or before its last masking step)."""
        if self.options.mask_policy != "reselect":
            return False
        last = self._ramp_last_step()
        return last is None or self.context.step <= last

    @torch.no_grad()
    def _replace_masks(self, new: Mapping[str, torch.Tensor]) -> None:
        """Install reselected masks (bool, the targets' shapes).  Entries pruned now have their
        trained value stored, entries coming back get it restored (``keeps_pruned_values``);
        otherwise a returning entry keeps the 0 that ``apply_masks`` left (module docstring)."""
        changed = returned = 0
        for fqn, keep in new.items():
            old, param = self.masks[fqn], self.params[fqn]
            keep = keep.to(device=old.device, dtype=torch.bool)
            pruned_now, back = old & ~keep, keep & ~old  # (target shape,)
            n_pruned, n_back = int(pruned_now.count_nonzero()), int(back.count_nonzero())
            if self.keeps_pruned_values:
                store = self._pruned_values.get(fqn)
                if store is None:
                    store = self._pruned_values[fqn] = torch.zeros_like(param.detach())
                if n_pruned:
                    store[pruned_now] = param.detach()[pruned_now]
                if n_back:
                    param.data[back] = store[back]
                    store[back] = 0
            changed += n_pruned + n_back
            returned += n_back
            self.masks[fqn] = keep
        self._mask_changed_last = changed
        self._returned_total += returned

    def pruned_values(self, fqn: str) -> torch.Tensor | None:
        """The trained values of ``fqn``'s pruned entries (zero where kept), i.e. the dense
        weight is ``param + pruned_values(fqn)``; ``None`` when the method stores none
        (persistent policy, no ``keeps_pruned_values``, or nothing pruned yet).  Read by
        methods whose scores learn from the dense weight (movement's ``grad * W``)."""
        return self._pruned_values.get(fqn)

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero every pruned entry.  Called by the trial after every optimizer step."""
        for fqn, param in self.params.items():
            param.mul_(self.masks[fqn])

    def finalize(self) -> nn.Module:
        """Bake the masks into the weights, drop method state and return the model.  Called once
        at the end of training or at export; parameter names are unchanged."""
        self.apply_masks()
        model = self.model
        self.params = {}
        self._pruned_values = {}
        return model

    def target_sparsity(self) -> dict[str, float]:
        """Measured fraction of zeros of each target (pruned or exactly zero)."""
        return {fqn: float((p == 0).float().mean()) for fqn, p in self.params.items()}

    # ------------------------------------------------------------------ optional hooks
    def task_loss(self, outputs: Any, batch: Mapping[str, torch.Tensor], teacher_outputs: Any):
        """Replace the task loss (default: ``None`` = the model's own loss on the labels).
        Called every step after the forward.  Its gradients are the ones ``after_backward``
        sees (PINS' self-distillation, GRAIN's logit distillation)."""
        return None

    def extra_loss(self, outputs: Any, batch: Mapping[str, torch.Tensor], teacher_outputs: Any):
        """A loss added after the task loss's backward, so its gradient updates the weights but
        never enters importance scores (GRAIN's gradient separation; soft movement's penalty).
        Called every step after ``task_loss``; ``None`` = nothing to add."""
        return None

    def after_backward(self, model: nn.Module) -> None:
        """Read ``.grad`` (task loss only) into running statistics, or add a prior's gradient.
        Called every step after the task loss's backward and its gradient clipping, before the
        extra loss's backward and the optimizer."""

    def after_optimizer_step(self, model: nn.Module) -> None:
        """Called every step after ``optimizer.step()`` and before the masking decision and
        ``apply_masks`` (proximal updates, score refreshes)."""

    def extra_parameters(self) -> list[torch.nn.Parameter]:
        """Trainable tensors the method adds (GRAIN's hidden-state projections); the trial adds
        them to the weight optimizer.  Called once after :meth:`prepare`."""
        return []

    def diagnostics(self) -> dict[str, float]:
        """Numbers that explain how the method reached its sparsity, e.g. how much of it the
        method's own criterion chose and how much a top-up filled.  The trial reports them with
        every evaluation as ``method/<key>`` (Ray results and MLflow curves).  Subclasses merge
        their keys into ``super().diagnostics()``.

        Default, under ``mask_policy="reselect"`` only: ``mask_changed_last``, the share of the
        prunable set whose mask flipped (pruned or back) at the last reselecting step, and
        ``returned``, the returns summed over the run as a share of the prunable set (an entry
        that comes back twice counts twice).

        Under an N:M ``sparsity_pattern``: ``nm_violations``, the number of groups of M
        consecutive weights (input dimension, pattern targets) holding more than N non-zeros
        (0 once the ramp has ended), ``nm_sparsity``, the measured fraction of zeros over those
        targets, and ``nm_dense_layers``, how many targets the pattern left dense."""
        out: dict[str, float] = {}
        if self._nm is not None and self.params:
            n, m = self._nm
            zeros = sum(int(p.numel() - p.count_nonzero()) for p in self.params.values())
            total = sum(p.numel() for p in self.params.values())
            out["nm_violations"] = float(sum(mask_ops.nm_violations(p, n, m) for p in self.params.values()))
            out["nm_sparsity"] = zeros / total
            out["nm_dense_layers"] = float(len(self.dense_layers))
        if self.options.mask_policy != "reselect":
            return out
        total = max(sum(m.numel() for m in self.masks.values()), 1)
        return {
            **out,
            "mask_changed_last": self._mask_changed_last / total,
            "returned": self._returned_total / total,
        }

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        """Masks plus whatever statistics the method keeps; tensors only on the CPU.  Subclasses
        extend the dict returned by ``super().state_dict()``."""
        # Copies: masks are updated in place by later steps.
        state: dict[str, Any] = {
            "masks": {k: v.detach().cpu().clone() for k, v in self.masks.items()}
        }
        if self.options.mask_policy == "reselect":
            state["reselection"] = {
                "pruned_values": {k: v.detach().cpu().clone() for k, v in self._pruned_values.items()},
                "mask_changed_last": self._mask_changed_last,
                "returned_total": self._returned_total,
            }
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output after :meth:`prepare` (Tune trial resume)."""
        for fqn, mask in state["masks"].items():
            if fqn not in self.masks:
                raise ValueError(f"checkpoint has a mask for unknown target {fqn!r}")
            self.masks[fqn] = mask.to(self.masks[fqn].device, dtype=torch.bool)
        saved = state.get("reselection")
        if saved is not None:
            for fqn, values in saved["pruned_values"].items():
                if fqn not in self.params:
                    raise ValueError(f"checkpoint has pruned values for unknown target {fqn!r}")
                param = self.params[fqn]
                self._pruned_values[fqn] = values.to(param.device, dtype=param.dtype, copy=True)
            self._mask_changed_last = int(saved["mask_changed_last"])
            self._returned_total = int(saved["returned_total"])
        self.apply_masks()

    @classmethod
    def option_fields(cls) -> list[dataclasses.Field]:
        """The method's options, for ``rayprune methods`` and the search-space schema."""
        return list(dataclasses.fields(cls.Options))
