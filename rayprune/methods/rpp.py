"""RPP: reweighted proximal pruning (Guo et al. 2019, arXiv 1909.12486; SPEC §6).

Objective ``f(w) + lam * sum_i alpha_i |w_i|`` (reweighted l1), optimised by taking the AdamW
step on ``f`` alone and then a proximal soft-threshold step on the penalty, so the penalty never
passes through Adam's per-coordinate normalisation:

    z   = AdamW_step(w, grad f(w))                      (the trial's optimizer, lr eta)
    w_i = sign(z_i) * max(|z_i| - eta * lam * alpha_i, 0)
    alpha_i = 1 / (|w_i| + eps)                          (refreshed every reweight_interval steps)

The soft threshold produces *exact* zeros; those zeros are the method's sparsity.  When the
pruning phase ends they become the fixed mask and ordinary (masked) fine-tuning follows.  SPEC §6
is built from secondary sources: the update rule is the standard reweighted-l1 + proximal form,
and eps, lam and the reweighting period are UNCONFIRMED; the defaults below are derived here.

**Choosing lam (default 1e-2) and eps (default 1e-3).**  With lr eta the prox moves a weight by
``eta * lam / (|w| + eps)`` per step.  (1) *Zeros are stable* when a zero weight cannot leave the
dead zone in one step: Adam's step is at most ~eta * r with r = |m_hat / sqrt(v_hat)| <= ~3, and a
zero weight's threshold is ``eta * lam / eps``, so ``lam / eps >= ~3`` is needed; 1e-2 / 1e-3 = 10.
(2) *How far it prunes*: with alpha refreshed often, ``d|w|/dt = -eta * lam / (|w| + eps)``
integrates to ``|w0|^2 / 2 + eps |w0| = eta * lam * T`` for the time T to reach zero, so the
penalty alone zeroes every weight with ``|w0| <~ sqrt(2 eta lam T)``.  For fine-tuning scale
(eta = 5e-5, a pruning phase of T ~ 2,000 steps) lam = 1e-2 gives ~0.045, about one standard
deviation of a BERT-base encoder weight (~0.04), i.e. the 50-80 % range the papers target
before the loss gradient pushes back on the important weights.  (3) It stays a perturbation
for live weights: at |w| = 0.04 the shrink is eta * 0.25, a quarter of one Adam step.  Search
lam log-uniformly in [1e-3, 1e-1]; any shortfall is closed by magnitude (below).

**How RPP fits ``step(sparsity)``.**  ``score`` is ``|w|``, so weights the prox zeroed rank
lowest.  At every masking event the exact zeros become pruned; if they are fewer than the
scheduled sparsity the gap is closed by magnitude (lowest ``|w|`` among the survivors, like GMP);
if they are more, all of them are kept and the measured sparsity, higher than requested, is what
``step`` returns.  The prox runs up to the schedule's last masking event; after it the mask is
fixed (the fine-tuning with a fixed pattern).  :meth:`diagnostics` reports which share of the
prunable set each of the two pruned (``prox_pruned``, ``magnitude_pruned``).

The default schedule is GMP's cubic ramp (10 % -> 70 % of training, a masking event every 10
steps).  The paper's literal order, prox for the whole phase and one hard prune at its end, is
``schedule.kind: constant`` (with ``start`` = ``end`` = where the phase ends).  It is not the
default because at fine-tuning budgets the prox alone does not reach high targets, and the
one-shot top-up is then a large one-shot magnitude prune: on MiniLM-L6 / SST-2 (300 steps, lr
1e-4, lam 1e-2) the prox had zeroed 23.8 % of the prunable weights by 70 % of training, so a
constant schedule at 90 % pruned the other 66.2 % by magnitude in one step, and the model ended at
the majority class (benchmarks/RESULTS.md; the cubic default: 0.780, GMP 0.781).  The integral above says why: the dead
zone's edge ``sqrt(2 lam sum_t eta_t)`` is ~0.016 there, against a median ``|w|`` of 0.035.

**``stage="mlm"``.**  The paper prunes during pre-training.  :meth:`prepare` then runs
``mlm_steps`` of masked-LM training on ``context.unlabeled_texts`` (the task's own training
text) through a ``transformers`` masked-LM head that shares the classifier's encoder module,
with AdamW + the proximal step, fixes the mask at ``schedule.final_sparsity`` (exact zeros topped
up by magnitude, or, if the prox zeroed more than the target, trimmed: the zeros nearest to
surviving the threshold, by ``|z| - eta*lam*alpha`` at the last step, are released and may
regrow), and the fine-tuning that follows runs with that mask and no prox.  If the checkpoint
has no pretrained MLM head (the bundled MiniLM has none), the head is trained alone for
``mlm_head_warmup_steps`` first, so a random head does not send noise into the encoder.
Cost: ``mlm_steps`` forward+backward passes at ``mlm_batch_size`` (sequences padded per batch,
vocabulary logits only at the ~15 % masked positions) plus the warm-up's head-only steps.  On
MiniLM-L6 with SST-2 text on the 2-core CI machine (heavily shared while measured) one MLM step
took ~14 s and one warm-up step ~7 s, against ~23 s for a fine-tuning step at batch 32 x 128;
the defaults (200 + 50 steps) thus cost roughly 130 fine-tuning steps.  The MLM head and a
second AdamW state (2x the model) live only during the stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rayprune.methods.base import MaskPolicy, MethodOptions, PruningMethod, TrainingContext, mask_policy_option
from rayprune.methods.schedules import SparsitySchedule

__all__ = ["RPPMethod", "RPPOptions", "soft_threshold_"]

_STAGES = ("finetune", "mlm")


@torch.no_grad()
def soft_threshold_(weight: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """In place ``w <- sign(w) * max(|w| - threshold, 0)``, element-wise; returns ``weight``.

    ``torch.nn.functional.softshrink`` takes one scalar lambda, and the reweighted threshold is
    per element, so it is written here as ``w - clamp(w, -t, t)``: that is exactly 0 when
    ``|w| <= t`` and exactly ``w -+ t`` otherwise (no rounding beyond the one subtraction).
    """
    return weight.sub_(torch.clamp(weight, min=-threshold, max=threshold))


@dataclass(kw_only=True)
class RPPOptions(MethodOptions):
    """RPP options (defaults derived in the module docstring; the paper's are UNCONFIRMED).

    Attributes:
        lam: l1 strength lambda; the per-step shrink is ``lr * lam / (|w| + eps)``.
        eps: reweighting floor, ``alpha = 1 / (|w| + eps)``; ``lam / eps`` >= ~3 keeps zeros stable.
        reweight_interval: alpha is refreshed from the current weights every this many steps.
        stage: ``finetune`` (prune during fine-tuning) or ``mlm`` (prune during a masked-LM
            stage on the task's text inside ``prepare``, then fine-tune with the mask fixed).
        mlm_steps: optimizer steps of the ``mlm`` stage.
        mlm_batch_size: sequences per ``mlm`` step.
        mlm_learning_rate: AdamW learning rate of the ``mlm`` stage (constant; also the prox's eta).
        mlm_probability: fraction of tokens masked (BERT's 15 %).
        mlm_head_warmup_steps: head-only steps before the ``mlm`` stage when the MLM head is not
            pretrained (encoder untouched).
        mask_policy: ``persistent`` (default: a zero fixed by a masking event stays pruned, SPEC
            §6.2's fixed mask after the hard prune) or ``reselect`` (the magnitude top-up is
            chosen again at every event; prox zeros and held zeros still score 0).
    """

    mask_policy: MaskPolicy = mask_policy_option(
        "persistent", "SPEC 6.2 fixes the hard-pruned zeros as the mask"
    )

    lam: float = field(default=1e-2, metadata={"help": "reweighted-l1 strength lambda (> 0)"})
    eps: float = field(default=1e-3, metadata={"help": "alpha = 1/(|w| + eps); eps > 0"})
    reweight_interval: int = field(
        default=10, metadata={"help": "refresh alpha every this many optimizer steps"}
    )
    stage: Literal["finetune", "mlm"] = field(
        default="finetune",
        metadata={"help": "finetune: prune while fine-tuning; mlm: prune in a masked-LM stage"},
    )
    mlm_steps: int = field(default=200, metadata={"help": "optimizer steps of the mlm stage"})
    mlm_batch_size: int = field(default=32, metadata={"help": "sequences per mlm step"})
    mlm_learning_rate: float = field(
        default=1e-4, metadata={"help": "constant AdamW lr of the mlm stage (the prox's eta)"}
    )
    mlm_probability: float = field(default=0.15, metadata={"help": "fraction of tokens masked"})
    mlm_head_warmup_steps: int = field(
        default=50, metadata={"help": "head-only steps when the MLM head is not pretrained"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("lam", "eps", "mlm_learning_rate", "mlm_probability"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"rpp.{name} must be a number, got {name}={value!r}")
        for name in ("reweight_interval", "mlm_steps", "mlm_batch_size", "mlm_head_warmup_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"rpp.{name} must be an int, got {name}={value!r}")
        if not (self.lam >= 0 and math.isfinite(self.lam)):
            raise ValueError(f"rpp.lam must be a finite number >= 0, got lam={self.lam}")
        if not self.eps > 0:
            raise ValueError(f"rpp.eps must be > 0, got eps={self.eps}")
        if self.stage not in _STAGES:
            raise ValueError(f"rpp.stage must be one of {_STAGES}, got stage={self.stage!r}")
        for name in ("reweight_interval", "mlm_steps", "mlm_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"rpp.{name} must be >= 1, got {name}={getattr(self, name)}")
        if self.mlm_head_warmup_steps < 0:
            raise ValueError(
                f"rpp.mlm_head_warmup_steps must be >= 0, got "
                f"mlm_head_warmup_steps={self.mlm_head_warmup_steps}"
            )
        if not self.mlm_learning_rate > 0:
            raise ValueError(
                f"rpp.mlm_learning_rate must be > 0, got mlm_learning_rate={self.mlm_learning_rate}"
            )
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(
                f"rpp.mlm_probability must be in (0, 1), got mlm_probability={self.mlm_probability}"
            )


class RPPMethod(PruningMethod):
    """Reweighted proximal pruning (SPEC §6); see the module docstring for the maths and defaults.

    When the trial calls what:

    * :meth:`prepare` (once): masks and the alpha buffer; with ``stage="mlm"`` also the whole
      masked-LM pruning stage, which ends with the mask fixed at the schedule's final sparsity.
    * :meth:`after_optimizer_step` (every step of the pruning phase, i.e. up to the schedule's
      last masking event; never in the ``mlm`` stage's fine-tuning): refresh alpha every
      ``reweight_interval`` steps, then the soft threshold with eta = ``context.learning_rate``.
    * :meth:`step` (on the schedule; GMP's cubic ramp by default): the exact zeros become
      pruned, then the lowest ``|w|`` top the mask up to the scheduled sparsity (never trimmed).

    Memory: alpha, one float32 per prunable weight (85M floats = 340 MB for BERT-base), plus the
    bool masks and two reused float32 scratch buffers of the largest target's size.  The ``mlm``
    stage frees alpha when it ends (fine-tuning needs none) and holds the MLM head and its own
    AdamW state only while it runs.  ``state_dict``: masks, alpha and whether the mask is final.
    """

    Options = RPPOptions
    description = "RPP: reweighted l1 + proximal soft threshold; its exact zeros become the mask"
    schedule_defaults = {"kind": "cubic", "start": 0.1, "end": 0.7, "interval": 10}

    def __init__(self, options: RPPOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.alpha: dict[str, torch.Tensor] = {}
        # True once the mask is final and the prox is off (the mlm stage has run).
        self._mask_fixed = False
        # Entries pruned because the prox had zeroed them / by the magnitude top-up.
        self.pruned_by_prox = 0
        self.pruned_by_magnitude = 0
        self._scratch: torch.Tensor | None = None  # (2, largest target numel), not state

    # ------------------------------------------------------------------ lifecycle
    def prepare(self, model: nn.Module, targets: Sequence[str], context: TrainingContext) -> None:
        """Masks and alpha; with ``stage="mlm"`` run the masked-LM pruning stage (see module)."""
        super().prepare(model, targets, context)
        self._mask_fixed = False
        self._refresh_alpha()
        if self.options.stage == "mlm" and not context.resuming:
            # A resumed trial gets its pruned weights and fixed mask from the checkpoint.
            self._run_mlm_stage()

    def score(self, fqn: str, weight: torch.Tensor) -> torch.Tensor:
        # Exact zeros made by the prox score 0, below every live weight.
        return weight.abs()

    @torch.no_grad()
    def step(self, sparsity: float) -> dict[str, float]:
        """Fix the exact zeros as pruned, then top up to ``sparsity`` by magnitude.

        If the zeros already exceed ``sparsity`` they are all kept, and the returned measured
        sparsity is higher than requested.  After the ``mlm`` stage the mask is final and this
        only keeps it (the base never un-prunes).
        """
        before = self._pruned_count()
        if not self._mask_fixed:
            for fqn, param in self.params.items():
                self.masks[fqn] &= param != 0
        zeros = self._pruned_count()
        measured = super().step(sparsity)
        after = self._pruned_count()
        # Under reselect the cut may release zeros beyond the target (after < zeros).
        self.pruned_by_prox += min(zeros, after) - before
        self.pruned_by_magnitude += max(after - zeros, 0)
        return measured

    def _pruned_count(self) -> int:
        return sum(int((~mask).sum()) for mask in self.masks.values())

    def diagnostics(self) -> dict[str, float]:
        """Shares of the prunable set pruned because the prox had zeroed them
        (``prox_pruned``) and by the magnitude top-up (``magnitude_pruned``)."""
        total = max(sum(m.numel() for m in self.masks.values()), 1)
        return {
            **super().diagnostics(),
            "prox_pruned": self.pruned_by_prox / total,
            "magnitude_pruned": self.pruned_by_magnitude / total,
        }

    @torch.no_grad()
    def after_optimizer_step(self, model: nn.Module) -> None:
        """Refresh alpha on schedule, then soft-threshold every prunable weight (pruning phase)."""
        if self._mask_fixed or self.context.step > self._pruning_phase_end():
            return
        if self.context.step % self.options.reweight_interval == 0:
            self._refresh_alpha()
        self._proximal_step(self.context.learning_rate)

    # ------------------------------------------------------------------ internals
    def _schedule(self) -> SparsitySchedule:
        # Without a run schedule (unit use) the method's own defaults decide the phase's end.
        if self.context.schedule is not None:
            return self.context.schedule
        return SparsitySchedule(final_sparsity=0.0, **self.schedule_defaults)

    def _pruning_phase_end(self) -> int:
        """Step of the schedule's last masking event: the prox runs up to and including it."""
        schedule = self._schedule()
        first, last = schedule.steps(self.context.total_steps)
        return first if schedule.kind in ("constant", "oneshot") else last

    @torch.no_grad()
    def _refresh_alpha(self) -> None:
        eps = self.options.eps
        for fqn, param in self.params.items():
            w = param.detach()
            alpha = self.alpha.get(fqn)
            if alpha is None or alpha.shape != w.shape or alpha.device != w.device:
                self.alpha[fqn] = w.abs().float().add_(eps).reciprocal_()
            else:  # in place: no full-size allocation every refresh
                torch.abs(w, out=alpha).add_(eps).reciprocal_()

    @torch.no_grad()
    def _proximal_step(self, lr: float, margins: dict[str, torch.Tensor] | None = None) -> None:
        """``w <- soft_threshold(w, lr * lam * alpha)`` on every target.  If ``margins`` is
        given, store ``|z| - threshold`` there (how far each weight was from surviving)."""
        scale = float(lr) * self.options.lam
        if scale == 0.0:
            return
        for fqn, param in self.params.items():
            w = param.data
            if margins is not None or w.dtype != torch.float32:
                threshold = (self.alpha[fqn] * scale).to(w.dtype)
                if margins is not None:
                    margins[fqn] = w.abs().float() - threshold.float()
                soft_threshold_(w, threshold)
                continue
            # soft_threshold_ without fresh full-size temporaries (they cost page faults every
            # step): threshold and -threshold in two reused buffers, then w -= clamp(w, -t, t).
            threshold, clamped = self._scratch_like(w)
            torch.mul(self.alpha[fqn], scale, out=threshold)
            torch.neg(threshold, out=clamped)
            torch.clamp(w, min=clamped, max=threshold, out=clamped)
            w.sub_(clamped)

    def _scratch_like(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two float32 views of w's shape into buffers sized for the largest target."""
        size = max(p.numel() for p in self.params.values())
        buf = self._scratch
        if buf is None or buf.shape[1] < size or buf.device != w.device:
            self._scratch = torch.empty(2, size, dtype=torch.float32, device=w.device)
        n = w.numel()
        return self._scratch[0, :n].view_as(w), self._scratch[1, :n].view_as(w)

    # ------------------------------------------------------------------ mlm stage
    def _run_mlm_stage(self) -> None:
        ctx, opts = self.context, self.options
        if ctx.tokenizer is None or len(ctx.unlabeled_texts) == 0:
            raise ValueError(
                "rpp.stage='mlm' needs the task's text: the trial must set "
                "TrainingContext.tokenizer and TrainingContext.unlabeled_texts (got tokenizer="
                f"{type(ctx.tokenizer).__name__}, {len(ctx.unlabeled_texts)} texts)"
            )
        if ctx.tokenizer.mask_token_id is None:
            raise ValueError("rpp.stage='mlm' needs a tokenizer with a mask token")
        if ctx.schedule is None:
            raise ValueError(
                "rpp.stage='mlm' fixes the mask at the run's target: TrainingContext.schedule "
                "(with final_sparsity) must be set"
            )
        from transformers import DataCollatorForLanguageModeling

        model = self.model
        was_training = model.training
        mlm_model, head, head_pretrained = _masked_lm_sharing_encoder(model)
        mlm_model.to(ctx.device).train()
        collator = DataCollatorForLanguageModeling(
            ctx.tokenizer, mlm_probability=opts.mlm_probability, seed=ctx.seed
        )
        batches = _mlm_examples(ctx, opts.mlm_batch_size)
        base_ids = {id(p) for p in model.base_model.parameters()}

        if not head_pretrained and opts.mlm_head_warmup_steps > 0:
            # A random head would push noise into the encoder; train it alone first.
            head_params = [p for p in mlm_model.parameters() if id(p) not in base_ids]
            warm = torch.optim.AdamW(head_params, lr=opts.mlm_learning_rate, weight_decay=0.0)
            for _ in range(opts.mlm_head_warmup_steps):
                batch = _to_device(collator(next(batches)), ctx.device)
                with torch.no_grad():
                    hidden = _encode(mlm_model, batch)
                loss = _mlm_loss(mlm_model, head, hidden, batch)
                if loss is None:
                    continue
                warm.zero_grad(set_to_none=True)
                loss.backward()
                warm.step()
            del warm

        # Unique parameters (the decoder is tied to the word embeddings).
        params = list({id(p): p for p in mlm_model.parameters() if p.requires_grad}.values())
        optimizer = torch.optim.AdamW(params, lr=opts.mlm_learning_rate, weight_decay=0.0)
        margins: dict[str, torch.Tensor] = {}
        for i in range(opts.mlm_steps):
            batch = _to_device(collator(next(batches)), ctx.device)
            loss = _mlm_loss(mlm_model, head, _encode(mlm_model, batch), batch)
            if loss is None:  # no token was masked in this batch
                continue
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if i % opts.reweight_interval == 0:
                self._refresh_alpha()
            last = i == opts.mlm_steps - 1
            self._proximal_step(opts.mlm_learning_rate, margins if last else None)
        del optimizer
        mlm_model.zero_grad(set_to_none=True)
        zeros = sum(int((p == 0).sum()) for p in self.params.values())
        self._fix_mask_after_mlm(ctx.schedule.final_sparsity, margins)
        pruned = self._pruned_count()
        self.pruned_by_prox = min(zeros, pruned)
        self.pruned_by_magnitude = pruned - self.pruned_by_prox
        # Fine-tuning runs with the mask fixed and no prox: alpha is no longer needed.
        self.alpha = {}
        self._mask_fixed = True
        model.train(was_training)

    @torch.no_grad()
    def _fix_mask_after_mlm(self, sparsity: float, margins: Mapping[str, torch.Tensor]) -> None:
        """Mask exactly ``sparsity``: exact zeros first, ordered by ``|z| - threshold`` at the
        last prox (more negative = deeper in the dead zone), then live weights by ``|w|``."""
        scores = {}
        for fqn, param in self.params.items():
            w = param.detach()
            magnitude = w.abs().float()
            # Zeros score <= 0 and every live weight > 0, so zeros are pruned first.
            if fqn in margins:
                zero_score = margins[fqn].clamp(max=0.0)
            else:  # the last mlm batch had no masked token: zeros tie
                zero_score = torch.zeros_like(magnitude)
            score = torch.where(w == 0, zero_score, magnitude)
            scores[fqn] = score
        self._prune_lowest(scores, sparsity)

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        # A copy: alpha is refreshed in place, which must not change a saved state.
        state["alpha"] = {k: v.to("cpu", copy=True) for k, v in self.alpha.items()}
        state["mask_fixed"] = self._mask_fixed
        state["pruned_by"] = torch.tensor([self.pruned_by_prox, self.pruned_by_magnitude])
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        alpha = state.get("alpha", {})
        unknown = sorted(set(alpha) - set(self.params))
        if unknown:
            raise ValueError(f"checkpoint has alpha for unknown target(s) {unknown[:5]}")
        self.alpha = {
            fqn: a.to(self.params[fqn].device, dtype=torch.float32, copy=True)
            for fqn, a in alpha.items()
        }
        self._mask_fixed = bool(state.get("mask_fixed", False))
        if "pruned_by" in state:
            self.pruned_by_prox, self.pruned_by_magnitude = (int(n) for n in state["pruned_by"])


# ---------------------------------------------------------------------- mlm helpers
def _masked_lm_sharing_encoder(model: nn.Module) -> tuple[nn.Module, nn.Module | None, bool]:
    """A ``transformers`` masked-LM model whose encoder *is* ``model.base_model``.

    Returns ``(mlm_model, head, head_pretrained)``.  ``head`` is the one child module besides
    the encoder (BERT's ``cls``, RoBERTa's ``lm_head``), applied only at masked positions; it is
    ``None`` for architectures whose head is split over several modules (then the full forward
    with ``labels`` is used).  The head comes from the checkpoint when it has one.
    """
    from transformers import AutoModelForMaskedLM

    config = model.config
    source = getattr(model, "name_or_path", "") or getattr(config, "_name_or_path", "")
    mlm_model, head_pretrained = None, False
    if source:
        try:
            mlm_model, info = AutoModelForMaskedLM.from_pretrained(source, output_loading_info=True)
        except (OSError, ValueError):
            mlm_model = None
        else:
            prefix = mlm_model.base_model_prefix
            # The head is pretrained when no non-encoder weight had to be initialised.
            head_pretrained = not any(
                not k.startswith(prefix + ".") for k in info.get("missing_keys", [])
            )
    if mlm_model is None:
        mlm_model = AutoModelForMaskedLM.from_config(config)
    prefix = mlm_model.base_model_prefix
    setattr(mlm_model, prefix, model.base_model)  # share the module: MLM trains *these* weights
    if getattr(mlm_model.config, "tie_word_embeddings", True):
        output = mlm_model.get_output_embeddings()
        if output is not None:
            output.weight = model.get_input_embeddings().weight
    others = [m for name, m in mlm_model.named_children() if name != prefix]
    head = others[0] if len(others) == 1 else None
    return mlm_model, head, head_pretrained


def _encode(mlm_model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Last hidden states of the shared encoder, (batch, seq, hidden)."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return mlm_model.base_model(**inputs).last_hidden_state


def _mlm_loss(mlm_model, head, hidden, batch) -> torch.Tensor | None:
    """Cross-entropy at the masked positions; ``None`` if no position is masked."""
    labels = batch["labels"]
    selected = labels != -100  # (batch, seq)
    if not bool(selected.any()):
        return None
    if head is None:
        inputs = {k: v for k, v in batch.items()}
        return mlm_model(**inputs).loss
    # Vocabulary logits only where a token was masked (~15 %): (masked, vocab) instead of
    # (batch, seq, vocab), which is the dominant cost of an MLM step for a small encoder.
    logits = head(hidden[selected])
    return F.cross_entropy(logits.float(), labels[selected])


def _mlm_examples(ctx: TrainingContext, batch_size: int):
    """Endless shuffled batches of tokenized texts (lists of dicts, for the collator)."""
    texts = list(ctx.unlabeled_texts)
    gen = torch.Generator().manual_seed(int(ctx.seed))
    while True:
        order = torch.randperm(len(texts), generator=gen).tolist()
        for start in range(0, len(order), batch_size):
            chunk = [texts[i] for i in order[start : start + batch_size]]
            encoded = ctx.tokenizer(
                chunk,
                truncation=True,
                max_length=ctx.max_seq_length,
                return_special_tokens_mask=True,
            )
            yield [{k: encoded[k][j] for k in encoded.keys()} for j in range(len(chunk))]


def _to_device(batch: Mapping[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}
