"""PLATON (Zhang et al., ICML 2022): sensitivity times uncertainty, a UCB-style score (SPEC §7.4).

Per prunable entry (weights *and* biases of the encoder linear layers, SPEC §1)::

    I_t = |θ ⊙ g|                                   instantaneous sensitivity, averaged over a window
    Ī   ← β1·Ī + (1 − β1)·I_window                  sensitivity EMA
    Ū   ← β2·Ū + (1 − β2)·|I_window − Ī|            uncertainty EMA (with the Ī just updated)
    score = Ī · Ū

A weight whose sensitivity swings from batch to batch gets a larger Ū and is kept over a weight
with the same average sensitivity that is steadily small: the ranking is Ī·Ū, not Ī.

PINS (``rayprune.methods.pins``) reuses all of this with another instantaneous score; it subclasses
:class:`PlatonMethod` and overrides only :meth:`PlatonMethod._instant_importance`.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from rayprune.methods.base import MaskPolicy, MethodOptions, PruningMethod, TrainingContext, mask_policy_option

__all__ = ["PlatonMethod", "PlatonOptions"]

# Window length when neither the option nor the run's schedule gives one (the papers' deltaT).
_DEFAULT_DELTA_T = 10


def _check_real(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {name}={value!r}")


@dataclass(kw_only=True)
class PlatonOptions(MethodOptions):
    """Options of :class:`PlatonMethod`.

    Attributes:
        beta1: EMA factor of the sensitivity Ī, in [0, 1).  0.85 in every official script.
        beta2: EMA factor of the uncertainty Ū, in [0, 1].  The official scripts use 0.85 (QQP,
            SST-2, STS-B, MNLI at 90%), 0.90 (QNLI) or 0.95 (MRPC, CoLA, RTE, SQuAD, MNLI at 80%),
            and 0.65 in one RTE run; 0.95 is our default.  ``beta2=1`` freezes Ū, and the score
            is then Ī alone (the official code's convention; the ablation without uncertainty).
            ``beta2=0`` gives Ū = |I − Ī| of the last window.
        delta_t: length of the local window in optimizer steps (the papers' deltaT).  ``None``
            (default) takes the run schedule's ``interval`` (10 in the paper defaults), so a window
            ends at every masking event.
        mask_policy: ``reselect`` (default: the official code zeroes in place and recomputes the
            mask from the scores at every masking event, so a weight can return, from 0) or
            ``persistent``.
    """

    mask_policy: MaskPolicy = mask_policy_option(
        "reselect", "official code zeroes in place and re-thresholds every deltaT steps"
    )
    beta1: float = 0.85
    beta2: float = 0.95
    delta_t: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_real("beta1", self.beta1)
        _check_real("beta2", self.beta2)
        if not 0.0 <= self.beta1 < 1.0:
            raise ValueError(f"beta1 must be in [0, 1), got beta1={self.beta1}")
        if not 0.0 <= self.beta2 <= 1.0:
            raise ValueError(f"beta2 must be in [0, 1], got beta2={self.beta2}")
        if self.delta_t is not None:
            if isinstance(self.delta_t, bool) or not isinstance(self.delta_t, numbers.Integral):
                raise TypeError(f"delta_t must be an int or None, got delta_t={self.delta_t!r}")
            if self.delta_t < 1:
                raise ValueError(f"delta_t must be >= 1 (or None), got delta_t={self.delta_t}")


class PlatonMethod(PruningMethod):
    """PLATON: prune the entries with the lowest Ī·Ū (SPEC §7.4).

    When the trial calls what:

    * :meth:`prepare` allocates the statistics (below).
    * :meth:`after_backward` (every step) adds this step's instantaneous importance
      ``|θ ⊙ g|`` to the current window.  A window closes, and its mean is folded into the EMAs
      Ī and Ū, after ``delta_t`` steps, on every step ``first + k·delta_t`` (``first`` = the
      schedule's first masking step, so with ``interval == delta_t`` every masking event ends a
      window of exactly ``delta_t`` steps), and at any other masking event (:meth:`step` folds
      a partly filled window first).  After the schedule's last masking event the masks are
      frozen and the statistics are no longer updated (saves the per-step work for the rest of
      training).
    * :meth:`step` (masking events of the cubic schedule, every ``interval`` = deltaT steps)
      ranks all entries globally by Ī·Ū.  Under ``reselect`` (default) the mask is chosen afresh
      at every event, as the official in-place zeroing does (SPEC §7.4, §10.1): a pruned entry's
      importance |θ·g| is 0 while it is held at 0, so its Ī·Ū decays by about β1 per window and
      it returns only if that still beats a kept entry; it restarts from 0.

    **Hook order, and why it differs from the official code.**  SPEC §7.4: the official code
    updates the scores *after* ``optimizer.step()``, from the ``.grad`` still held then, i.e. it
    uses θ_{t+1} ⊙ g_t with the clipped gradient.  Our trial zeroes the gradients before
    ``after_optimizer_step`` and only ``after_backward`` sees the task-loss gradient, so we use
    θ_t ⊙ g_t with the unclipped gradient: the first-order Taylor term at the point where g_t was
    computed.  θ moves by about one learning rate per step (≈1e-4 relative), and clipping scales
    every entry of a step by the same factor, so the ranking inside a step is unchanged; only
    the relative weight of steps inside a window can differ slightly.

    Other choices: the window is summed and divided at fold time (equal to the official running
    mean); no bias correction of the EMAs (as the official code: every entry shares the same
    number of folds, so the ranking is unaffected); a window that closes at a masking event
    includes that step's importance (the official code starts the next window with it).

    Schedule defaults (``schedule_defaults``): cubic, interval deltaT = 10.  The official scripts
    give the ramp as ``warmup_steps`` W, ``initial_warmup`` a = 1 and ``final_warmup`` b: dense
    for t <= a·W, final sparsity from T − b·W.  Our ``SparsitySchedule(start, end)`` takes
    fractions of the run, start = a·W/T and end = (T − b·W)/T.  With each task's official
    epochs and batch size (steps T): MNLI 0.055/0.725, QQP 0.047/0.763, SST-2 0.079/0.604,
    QNLI 0.061/0.633, STS-B 0.093/0.537, MRPC 0.065/0.804, CoLA 0.124/0.627, RTE 0.064/0.615.
    The defaults are the medians, start = 0.065 and end = 0.63; fractions carry the paper's
    shape over to the shorter runs of a search.

    Per-task β1/β2 of the official scripts (BERT-base): MNLI 0.85/0.85–0.95, QQP 0.85/0.85,
    SST-2 0.85/0.85, QNLI 0.85/0.90, STS-B 0.85/0.85, MRPC 0.85/0.95, CoLA 0.85/0.95,
    RTE 0.85/0.95 (0.65), SQuAD 0.85/0.95.

    Memory: three full-size float32 buffers over the prunable set (window sum, Ī, Ū), as
    SPEC §7.4 counts, plus the base's bool masks and one scratch buffer the size of the largest
    target.  On MiniLM-L6 (10.6M prunable entries) that is about 128 MB.  Per step: three
    elementwise passes (product, abs, add); per window fold six.
    """

    Options = PlatonOptions
    description = "PLATON (Zhang et al. 2022): sensitivity EMA x uncertainty EMA of |w*g|, cubic schedule"
    default_scope = "encoder_linear_bias"
    schedule_defaults = {"kind": "cubic", "start": 0.065, "end": 0.63, "interval": 10}

    options: PlatonOptions

    # ------------------------------------------------------------------ lifecycle
    def prepare(self, model: nn.Module, targets: Sequence[str], context: TrainingContext) -> None:
        super().prepare(model, targets, context)
        schedule = getattr(context, "schedule", None)
        delta_t = self.options.delta_t
        if delta_t is None:
            delta_t = int(getattr(schedule, "interval", _DEFAULT_DELTA_T))
        self._delta_t = delta_t
        # Steps of the schedule that matter to the statistics: the first masking event (windows
        # are aligned on it) and the last one (after it the masks are frozen).
        self._ramp_first: int | None = None
        self._ramp_last: int | None = None
        if schedule is not None and hasattr(schedule, "steps") and context.total_steps > 0:
            first, last = schedule.steps(context.total_steps)
            if getattr(schedule, "kind", "cubic") in ("constant", "oneshot"):
                last = first
            self._ramp_first, self._ramp_last = first, last
        zeros = lambda p: torch.zeros_like(p, dtype=torch.float32)  # noqa: E731
        self._window = {fqn: zeros(p) for fqn, p in self.params.items()}  # sum over the window
        self._sensitivity = {fqn: zeros(p) for fqn, p in self.params.items()}  # Ī
        self._uncertainty = {fqn: zeros(p) for fqn, p in self.params.items()}  # Ū
        # One scratch buffer the size of the largest target for each step's importance, so the
        # per-step work allocates nothing (views of it are shaped like each target).
        self._scratch = torch.empty(
            max(p.numel() for p in self.params.values()),
            dtype=torch.float32,
            device=next(iter(self.params.values())).device,
        )
        self._window_steps = 0
        self._folds = 0

    def _instant_importance(
        self, param: torch.Tensor, grad: torch.Tensor, out: torch.Tensor
    ) -> torch.Tensor:
        """Write this step's importance of every entry of one target, ``|θ ⊙ g|`` (PLATON),
        into ``out`` (float32, the target's shape) and return it.  PINS overrides this."""
        return torch.mul(param, grad, out=out).abs_()

    @torch.no_grad()
    def after_backward(self, model: nn.Module) -> None:
        """Add ``_instant_importance`` of this step to the window; close the window when due."""
        step = self.context.step
        if self._ramp_last is not None and step > self._ramp_last:
            return  # masks are frozen: the scores will not be read again
        for fqn, param in self.params.items():
            if param.grad is None:  # a target that took no part in this loss: importance 0
                continue
            out = self._scratch[: param.numel()].view(param.shape)
            self._window[fqn].add_(self._instant_importance(param.detach(), param.grad, out))
        self._window_steps += 1
        aligned = (
            self._ramp_first is not None and (step - self._ramp_first) % self._delta_t == 0
        )
        if self._window_steps >= self._delta_t or aligned:
            self._fold_window()

    @torch.no_grad()
    def _fold_window(self) -> None:
        """Fold the window's mean importance into Ī, then |mean − Ī| into Ū, and reset it."""
        beta1, beta2 = float(self.options.beta1), float(self.options.beta2)
        n = self._window_steps
        for fqn, window in self._window.items():
            mean = window.div_(n)  # the window buffer now holds the window's mean
            sensitivity = self._sensitivity[fqn]
            # lerp_(x, 1 − β) is β·s + (1 − β)·x in one pass.
            sensitivity.lerp_(mean, 1.0 - beta1)
            if beta2 < 1.0:
                deviation = mean.sub_(sensitivity).abs_()  # reuses the window buffer
                self._uncertainty[fqn].lerp_(deviation, 1.0 - beta2)
            window.zero_()
        self._window_steps = 0
        self._folds += 1

    @torch.no_grad()
    def step(self, sparsity: float) -> dict[str, float]:
        """Fold a partly filled window, then prune to ``sparsity`` by Ī·Ū (see the base)."""
        if self._window_steps > 0:
            self._fold_window()
        if self._folds == 0 and sparsity > 0:
            warnings.warn(
                f"{type(self).__name__}.step({sparsity}) before any gradient statistics: every "
                "score is 0 and the pruned entries are chosen by position; call after_backward "
                "first (the trial does)",
                RuntimeWarning,
                stacklevel=2,
            )
        return super().step(sparsity)

    def score(self, fqn: str, weight: torch.Tensor) -> torch.Tensor:
        """Ī·Ū of every entry (Ī alone when ``beta2 == 1``); higher = keep."""
        if self.options.beta2 == 1.0:
            return self._sensitivity[fqn].clone()
        return self._sensitivity[fqn] * self._uncertainty[fqn]

    def finalize(self) -> nn.Module:
        self._window, self._sensitivity, self._uncertainty = {}, {}, {}
        self._scratch = torch.empty(0)
        return super().finalize()

    # ------------------------------------------------------------------ checkpoint state
    _BUFFERS = ("window", "sensitivity", "uncertainty")

    def state_dict(self) -> dict[str, Any]:
        """Masks plus the three statistics buffers and the window position (CPU copies)."""
        state = super().state_dict()
        state["importance"] = {
            **{
                name: {fqn: t.detach().cpu().clone() for fqn, t in getattr(self, f"_{name}").items()}
                for name in self._BUFFERS
            },
            "window_steps": self._window_steps,
            "folds": self._folds,
        }
        return state

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if "importance" not in state:
            raise ValueError(
                f"{type(self).__name__} checkpoint has no 'importance' entry (was it written by "
                "another method?)"
            )
        saved = state["importance"]
        for name in self._BUFFERS:
            buffers = getattr(self, f"_{name}")
            if set(saved[name]) != set(buffers):
                raise ValueError(
                    f"checkpoint statistics '{name}' cover other targets than this run: "
                    f"{sorted(set(saved[name]) ^ set(buffers))[:5]}"
                )
            for fqn, tensor in saved[name].items():
                if tensor.shape != buffers[fqn].shape:
                    raise ValueError(
                        f"checkpoint '{name}' of {fqn} has shape {tuple(tensor.shape)}, "
                        f"expected {tuple(buffers[fqn].shape)}"
                    )
                buffers[fqn].copy_(tensor)
        self._window_steps = int(saved["window_steps"])
        self._folds = int(saved["folds"])
