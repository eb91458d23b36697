"""MGPP: gradual magnitude pruning under a spike-and-slab mixture Gaussian prior (SPEC §2).

Zhang, Sun & Liang, "Magnitude Pruning of Large Pretrained Transformer Models with a Mixture
Gaussian Prior" (arXiv 2411.00969).  Pruning itself is plain ``|w|`` with one global threshold on
the schedule; what makes MGPP is the prior

    pi(w) = lambda * N(w; 0, v1) + (1 - lambda) * N(w; 0, v0),    v0 << v1,

whose negative log-gradient, scaled by 1/n (n = training-set size), is added to the loss gradient
of every prunable weight after each backward pass, so training follows
``mean_loss(w) - (1/n) * sum_j log pi(w_j)``.  With q(w) the posterior probability that w belongs
to the spike,

    c1 = log(lambda) - log(1 - lambda) + 0.5*log(v0) - 0.5*log(v1)
    c2 = 1/(2*v0) - 1/(2*v1)
    q(w) = sigmoid(-(c2*w^2 + c1))
    prior_grad(w) = w * (q(w)/v0 + (1 - q(w))/v1)

the spike pins weights that are already near zero (coefficient ~ 1/(n*v0), e.g. 1.5e4 on SST-2)
and the slab is a weak L2 on every live weight (coefficient ~ 1/(n*v1), e.g. 1.5e-4).  The two
weighted components cross at ``|w|* = sqrt(-c1/c2)`` (:func:`prior_threshold`), where q = 1/2.

**Variances, not standard deviations.**  The options are called ``sigma0`` / ``sigma1`` to match
the paper and its code, but the official code uses them as *variances* (``0.5*log(sigma)``,
``0.5/sigma``), and so does rayprune: ``sigma0`` is v0 and ``sigma1`` is v1 (SPEC §2.2).

**Masks are reselected** (``mask_policy="reselect"``, default): the official ``MWA`` pruner zeroes
in place and keeps no mask before t_e, so every pruning event ranks all weights by ``|w|`` again
(SPEC §2.3).  A returning weight restarts from 0.  Between events we hold the mask (the official
code lets a zeroed weight take optimizer steps, where the spike's pull of ~1/(n v0) per unit of
``w`` pins it within about one learning rate of 0), so a pruned weight scores 0 and, in practice,
MGPP's masks only grow under either policy: what SPEC §2.3 calls rare regrowth does not happen
here.  The prior is applied to all prunable weights; on pruned ones it is exactly zero because
w = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from rayprune.methods.base import MaskPolicy, MethodOptions, PruningMethod, TrainingContext, mask_policy_option
from rayprune.methods.schedules import SparsitySchedule

__all__ = ["MGPPMethod", "MGPPOptions", "mixture_prior_grad", "prior_threshold", "prior_lambda"]

# 1/v0 must stay finite in float32 (max ~3.4e38), otherwise w = 0 gives 0 * inf = NaN.
_MIN_VARIANCE = 1e-30


def _prior_constants(v0: float, v1: float, lam: float) -> tuple[float, float]:
    """Return (c1, c2) of SPEC §2.2 in float64."""
    c1 = math.log(lam) - math.log1p(-lam) + 0.5 * math.log(v0) - 0.5 * math.log(v1)
    c2 = 0.5 / v0 - 0.5 / v1
    return c1, c2


def _check_prior_args(v0: float, v1: float, lam: float) -> None:
    if not (v0 > 0 and v1 > v0):
        raise ValueError(f"need 0 < v0 < v1 (prior variances), got v0={v0}, v1={v1}")
    if not 0.0 < lam < 1.0:
        raise ValueError(f"the mixing weight must be in (0, 1), got lam={lam}")


def mixture_prior_grad(weight: torch.Tensor, *, v0: float, v1: float, lam: float) -> torch.Tensor:
    """Gradient of ``-log pi(w)`` of the spike-and-slab prior, element-wise (not yet divided by n).

    ``w * (q/v0 + (1 - q)/v1)`` with ``q = sigmoid(-(c2*w^2 + c1))`` (SPEC §2.2).  Written with
    ``torch.sigmoid`` instead of ``1/(1 + exp(.))``: for v0 = 1e-10, ``c2*w^2`` is ~5e7 at
    ``|w| = 0.1`` and ``exp`` would overflow, while the sigmoid saturates cleanly to 0.

    Args:
        weight: the weights, any shape; half precision is computed in float32.
        v0: spike *variance* (the option ``sigma0``).
        v1: slab *variance* (the option ``sigma1``).
        lam: the slab's mixing weight lambda_t in (0, 1).

    Returns:
        a tensor of ``weight``'s shape and dtype.
    """
    _check_prior_args(v0, v1, lam)
    c1, c2 = _prior_constants(v0, v1, lam)
    w = weight.detach()
    work = w if w.dtype in (torch.float32, torch.float64) else w.float()
    q = torch.sigmoid(-(work.square() * c2 + c1))
    # q/v0 + (1-q)/v1 = 1/v1 + q*(1/v0 - 1/v1): one fewer full-size temporary.
    coef = q * (1.0 / v0 - 1.0 / v1) + 1.0 / v1
    return (work * coef).to(weight.dtype)


def prior_threshold(*, v0: float, v1: float, lam: float) -> float:
    """``|w|*`` where the two weighted prior components are equal (q = 1/2), SPEC §2.2.

    ``sqrt(log(((1-lam)/lam) * sqrt(v1/v0)) / (1/(2 v0) - 1/(2 v1)))``.  Weights below it are
    pulled toward zero by the spike.  Returns 0.0 when the slab outweighs the spike even at w = 0
    (the log is negative), i.e. when no weight is in the spike's region.
    """
    _check_prior_args(v0, v1, lam)
    c1, c2 = _prior_constants(v0, v1, lam)
    return math.sqrt(-c1 / c2) if c1 < 0 else 0.0


def prior_lambda(
    step: int, total_steps: int, schedule: SparsitySchedule, *, lambda0: float, alpha_final: float
) -> float | None:
    """Mixing weight lambda_t = lambda0 * alpha(t) at ``step``, or ``None`` when no prior applies.

    SPEC §2.3: with t_s and t_e the first and last step of the schedule's ramp, alpha = 1 for
    t <= t_s, falls linearly from 1 to ``alpha_final`` over (t_s, t_e], and the prior is applied
    only at steps t <= t_e (so ``None`` after t_e).
    """
    _, last = schedule.steps(total_steps)
    if step > last:
        return None
    alpha = 1.0 + (alpha_final - 1.0) * schedule.fraction_done(step, total_steps)
    return lambda0 * alpha


@dataclass(kw_only=True)
class MGPPOptions(MethodOptions):
    """MGPP options; defaults are the authors' SST-2 script (SPEC §2.4).

    The other tasks' scripts use: MNLI v0=1e-10, v1=0.05 (t_s 1 epoch of 8, Δt 100);
    QQP v0=1e-10, v1=0.05 (t_s 2 of 10 epochs, Δt 100); QNLI v0=1e-9, v1=0.05, s_i=0.5
    (t_s 2 of 10 epochs, Δt 100); SQuAD v0=1e-10, v1=0.05, s_i=0.5.  lambda0=0.1 and
    alpha_final=0.001 everywhere.

    Attributes:
        sigma0: spike prior *variance* v0 (not a standard deviation; SPEC §2.2).  Must be
            >= 1e-30 so 1/v0 stays finite in float32.
        sigma1: slab prior *variance* v1 (not a standard deviation; SPEC §2.2); > sigma0.
        lambda0: initial mixing weight of the slab, in (0, 1).
        alpha_final: lambda is annealed as lambda0 * alpha, alpha linear from 1 at the ramp's
            start to ``alpha_final`` at its end, in (0, 1].
        mask_policy: ``reselect`` (default: no persistent mask before t_e in the official code)
            or ``persistent``.
    """

    mask_policy: MaskPolicy = mask_policy_option(
        "reselect", "official MWA zeroes in place, no persistent mask before t_e"
    )

    sigma0: float = field(
        default=1e-9,
        metadata={"help": "spike prior *variance* v0 (not a standard deviation; SPEC §2.2)"},
    )
    sigma1: float = field(
        default=0.1,
        metadata={"help": "slab prior *variance* v1 (not a standard deviation; SPEC §2.2)"},
    )
    lambda0: float = field(
        default=0.1, metadata={"help": "initial slab mixing weight lambda0 in (0, 1)"}
    )
    alpha_final: float = field(
        default=0.001,
        metadata={"help": "lambda anneals linearly to lambda0*alpha_final over the ramp"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("sigma0", "sigma1", "lambda0", "alpha_final"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"mgpp.{name} must be a number, got {name}={value!r}")
        if not _MIN_VARIANCE <= self.sigma0 < self.sigma1:
            raise ValueError(
                f"mgpp needs {_MIN_VARIANCE} <= sigma0 < sigma1 (both are variances), got "
                f"sigma0={self.sigma0}, sigma1={self.sigma1}"
            )
        if not 0.0 < self.lambda0 < 1.0:
            raise ValueError(f"mgpp.lambda0 must be in (0, 1), got lambda0={self.lambda0}")
        if not 0.0 < self.alpha_final <= 1.0:
            raise ValueError(
                f"mgpp.alpha_final must be in (0, 1], got alpha_final={self.alpha_final}"
            )


class MGPPMethod(PruningMethod):
    """Magnitude pruning with a mixture Gaussian prior (SPEC §2).

    When the trial calls what:

    * :meth:`prepare` (once): masks; checks that ``context.num_train_examples`` is known.
    * :meth:`after_backward` (every step t <= t_e, the ramp's last step): adds
      ``mixture_prior_grad(w; v0, v1, lambda_t) / n`` to ``.grad`` of every prunable weight,
      lambda_t from :func:`prior_lambda`.  Nothing after t_e.  The trial clips the task
      gradient *before* this hook, so the clip never rescales the prior's gradient.
    * :meth:`step` (on the schedule): score ``|w|``, one global threshold.

    ``sigma0``/``sigma1`` are the prior *variances* v0/v1 (see the module docstring).

    Schedule defaults (SST-2 script): prune to ``initial_sparsity`` 0.3 at once at t_s, then cubic
    to the target with Δt = 10 steps; t_s = 1000 of 12,630 steps (~0.08 of training); the ramp ends
    at the last step (F = 0, no separate sparse fine-tuning), which is also the last step of the
    prior.  The other tasks use Δt = 100 and t_s = 1-2 epochs (0.125-0.2 of training).

    Memory: no state beyond the masks (one bool per prunable weight) and one float32 scratch
    buffer the size of the largest prunable tensor (reused by ``after_backward``; 2.4M floats
    for BERT-base's FFN).  ``state_dict`` is the masks; the step count lives in the trial's
    context.
    """

    Options = MGPPOptions
    description = "MGPP: |w| with a spike-and-slab mixture Gaussian prior on the gradient"
    schedule_defaults = {
        "kind": "cubic",
        "initial_sparsity": 0.3,
        "start": 0.08,
        "end": 1.0,
        "interval": 10,
    }

    def __init__(self, options: MGPPOptions | None = None, **kwargs) -> None:
        super().__init__(options, **kwargs)
        self._scratch: torch.Tensor | None = None  # reused by after_backward, not state

    def prepare(self, model: nn.Module, targets, context: TrainingContext) -> None:
        """Create masks; the prior needs ``context.num_train_examples`` (n > 0)."""
        n = context.num_train_examples
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(
                "mgpp scales its prior gradient by 1/n and needs the training-set size: set "
                f"TrainingContext.num_train_examples to a positive int, got {n!r}"
            )
        super().prepare(model, targets, context)

    def score(self, fqn: str, weight: torch.Tensor) -> torch.Tensor:
        return weight.abs()

    def _schedule(self) -> SparsitySchedule:
        # Without a run schedule (unit use), fall back to the method's own defaults; only the
        # ramp's first/last step matter here, not the target.
        if self.context.schedule is not None:
            return self.context.schedule
        return SparsitySchedule(final_sparsity=0.0, **self.schedule_defaults)

    @torch.no_grad()
    def after_backward(self, model: nn.Module) -> None:
        """Add the prior's gradient / n to every prunable weight's ``.grad`` (steps <= t_e)."""
        ctx = self.context
        lam = prior_lambda(
            ctx.step,
            ctx.total_steps,
            self._schedule(),
            lambda0=self.options.lambda0,
            alpha_final=self.options.alpha_final,
        )
        if lam is None:
            return
        v0, v1, n = self.options.sigma0, self.options.sigma1, ctx.num_train_examples
        c1, c2 = _prior_constants(v0, v1, lam)
        spike_minus_slab = (1.0 / v0 - 1.0 / v1) / n
        slab = 1.0 / (v1 * n)
        for param in self.params.values():
            w = param.detach()
            grad = param.grad
            if w.dtype != torch.float32 or grad is None or grad.dtype != torch.float32:
                # Rare path (half precision, a weight without a gradient): allocate.
                prior = mixture_prior_grad(w, v0=v0, v1=v1, lam=lam) / n
                param.grad = prior.to(param.dtype) if grad is None else grad.add_(prior)
                continue
            # Same maths as mixture_prior_grad, written into a reused scratch buffer (fresh
            # full-size temporaries cost page faults every step) with as few passes as possible:
            #   q = sigmoid(-c2 w^2 - c1);  grad += w/(n v1) + w q (1/v0 - 1/v1)/n
            q = self._scratch_like(w)
            neg_c1 = torch.full((), -c1, dtype=w.dtype, device=w.device)  # 0-d, broadcast
            torch.addcmul(neg_c1, w, w, value=-c2, out=q).sigmoid_()
            grad.add_(w, alpha=slab).addcmul_(w, q, value=spike_minus_slab)

    def _scratch_like(self, w: torch.Tensor) -> torch.Tensor:
        """A float32 view of w's shape into one buffer sized for the largest target."""
        size = max(p.numel() for p in self.params.values())
        buf = self._scratch
        if buf is None or buf.numel() < size or buf.device != w.device:
            buf = self._scratch = torch.empty(size, dtype=torch.float32, device=w.device)
        return buf[: w.numel()].view_as(w)
