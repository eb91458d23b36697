"""GRAIN (Yang et al., ACL 2023): gradient-based intra-attention structured pruning, with
distillation and gradient separation (SPEC §3); and the heads+FFN baseline it is compared with.

**Units** (SPEC §3.1), per encoder layer of a BERT-family model:

* *query unit* k: row k of W_Q and of W_K plus entries k of b_Q and b_K (2d + 2 parameters); it
  shrinks one head's QK dimension;
* *value unit* k: row k of W_V, entry k of b_V and column k of W_O (2d + 1); it shrinks one head's
  VO dimension;
* *FFN unit* j: row j of W_1, entry j of b_1 and column j of W_2 (2d + 1).

Heads can end with different QK and VO sizes.  A head that has lost all of its value units adds
nothing to the output, so its query units are removed with it.  :class:`HeadFFNMethod` uses whole
heads (4·d·d_head + 3·d_head parameters each) and FFN units instead.

**Score** (SPEC §3.2): the first-order Taylor estimate of removing the unit, IS = |Σ g·w| with the
sign inside the sum.  As in the official code, the sum runs over the parameters that *gate* the
unit's contribution: W_Q's row and b_Q for a query unit, W_O's column for a value unit, W_2's
column for an FFN unit, W_O's columns of the head for a whole head.  Σ g·w over those is exactly
∂L/∂ξ for a scalar gate ξ on the unit's output.  (The other matrix of a query or value pair gives
the same number, q·k and the value path being bilinear, so summing both would only double the
attention units against the FFN units.)  Scores are smoothed every step:
ĪS_t = β·ĪS_{t-1} + (1-β)·IS_t (β = 0.998), starting from zero (a common factor that does not
change the ranking).  **StructReg** multiplies each *value* unit's update by tanh(D/α) with D the
share of value units still alive in its head (α = 0.3; α = 0 turns it off), as the official code
does, so thin heads empty out and disappear; the layer-level variants of the code (α = 1e-4) are
no-ops and are left out.

**Losses** (SPEC §3.3): no hard-label loss.  :meth:`task_loss` is the soft cross-entropy to the
teacher's logits at temperature τ = 8 (TextBrewer's form, no τ² factor; MSE to the teacher's output
for regression).  :meth:`extra_loss` is L_Hidden = Σ_i MSE(H_i^S·W_i + b_i, H_i^T) over the hidden
states {0, 2, 4, ...} (0 = embedding output; the last layer is always included), averaged over
real tokens (the attention mask), through trainable d×d projections initialised to the identity
(bias zero), as the official distiller.  The trial backpropagates the task loss, calls
:meth:`after_backward` (which reads the gradients into the scores), and only then backpropagates
the extra loss: the hidden loss trains the weights but never enters the scores (*gradient
separation*).

**Selection** (SPEC §3.4): at every masking step all units of all layers are ranked together by
smoothed score and removed in ascending order, each weighted by its parameter count, until the
removed share of the encoder's parameters (every parameter inside the encoder blocks, LayerNorms
included, as the paper's 85.1M) reaches the requested sparsity; the last unit may overshoot by
less than one unit (plus, for GRAIN, the query units of a head it empties).  Masks only grow.  The
trial's ``final_sparsity`` therefore means encoder-parameter sparsity: density 5% is sparsity 0.95.
Default schedule: cubic in density from 20% to 40% of training, a mask step every step.

**Memory**: per unit one float (score) and one bool (alive): L·(2·H·d_head + d_ff) of each
(about 55k for BERT-base, 14k for MiniLM-L6); per-parameter bool masks (as every method); and the
hidden-state projections, (d² + d) floats per matched hidden state (7 × 590k for BERT-base) plus
their optimizer state.

**Export**: :meth:`finalize` returns a physically smaller model
(:func:`rayprune.methods.structured.models.shrink_model`), whose state-dict keys are BERT's with smaller shapes.

**Embedding factorisation** (SPEC §3.4, "EF"): with ``embedding_rank`` r > 0, :meth:`prepare`
replaces the word embedding by its truncated SVD, E ~ (U_r S_r)·V_r^T, before training
(:func:`rayprune.methods.structured.models.factorize_word_embeddings`); both factors train with the model and
the export keeps them (the paper uses r = 192 on BERT-base).  The default, 0, is the paper's
"GRAIN w/o EF" variant, which its ablations report; embeddings are outside the encoder, so EF does
not change the density that the schedule counts, only the total parameter count.

The model family is BERT (module names ``attention.self.query`` ...).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rayprune.methods import masks as mask_ops
from rayprune.methods.base import MaskPolicy, MethodOptions, PruningMethod, TrainingContext, mask_policy_option

__all__ = ["GrainMethod", "HeadFFNMethod", "GrainOptions", "HeadFFNOptions"]

# Sub-module paths of one BERT-family encoder layer, by role.
_ROLES: dict[str, str] = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attn_out": "attention.output.dense",
    "ffn_in": "intermediate.dense",
    "ffn_out": "output.dense",
}
_HIDDEN_LAYER_CHOICES = ("every_other", "all")


@dataclass(kw_only=True)
class HeadFFNOptions(MethodOptions):
    """Options shared by the distilled structured methods (SPEC §3.5 defaults).

    Attributes:
        temperature: τ of the soft cross-entropy to the teacher's logits (paper: 8).
        beta: smoothing of the unit scores, ĪS_t = β·ĪS_{t-1} + (1-β)·IS_t (paper: 0.998).
        hidden_loss_weight: weight of L_Hidden (paper: 1); 0 drops the hidden loss and its
            projections.
        hidden_layers: hidden states matched by L_Hidden: ``every_other`` (0, 2, 4, ... and the
            last; paper: 0, 2, ..., 12 on BERT-base), ``all``, or explicit indices (0 = embedding
            output).
        embedding_rank: rank r of the word-embedding SVD factorisation applied before
            training (paper: 192 on BERT-base); 0 (default) keeps the embedding whole.
        selection: must stay ``global`` (all units are ranked together).
        mask_policy: ``persistent`` (default: GRAIN's masks only grow, SPEC §3.4) or
            ``reselect`` (units re-ranked from their smoothed scores at every masking step of
            the ramp; a returning unit restarts from 0).
    """

    mask_policy: MaskPolicy = mask_policy_option("persistent", "GRAIN's masks only grow, SPEC 3.4")
    temperature: float = 8.0
    beta: float = 0.998
    hidden_loss_weight: float = 1.0
    hidden_layers: str | Sequence[int] = "every_other"
    embedding_rank: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.selection != "global":
            raise ValueError(
                f"selection must be 'global' for structured unit pruning (all units ranked "
                f"together, SPEC §3.4), got selection={self.selection!r}"
            )
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got temperature={self.temperature}")
        if not 0.0 <= self.beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got beta={self.beta}")
        if not self.hidden_loss_weight >= 0:
            raise ValueError(
                f"hidden_loss_weight must be >= 0, got hidden_loss_weight={self.hidden_loss_weight}"
            )
        rank = self.embedding_rank
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise ValueError(
                f"embedding_rank must be an int >= 0 (0 = no factorisation), got embedding_rank={rank!r}"
            )
        layers = self.hidden_layers
        if isinstance(layers, str):
            if layers not in _HIDDEN_LAYER_CHOICES:
                raise ValueError(
                    f"hidden_layers must be one of {_HIDDEN_LAYER_CHOICES} or a list of hidden-state "
                    f"indices, got hidden_layers={layers!r}"
                )
        elif not (
            isinstance(layers, Sequence)
            and len(layers) > 0
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers)
        ):
            raise TypeError(
                f"hidden_layers must be one of {_HIDDEN_LAYER_CHOICES} or a non-empty list of "
                f"non-negative ints, got hidden_layers={layers!r}"
            )
        else:
            self.hidden_layers = tuple(sorted(set(layers)))


@dataclass(kw_only=True)
class GrainOptions(HeadFFNOptions):
    """GRAIN's options: those of :class:`HeadFFNOptions` plus StructReg.

    Attributes:
        alpha: StructReg's α: value-unit score updates are multiplied by tanh(D/α), D the share
            of value units left in the head (paper: 0.3; 0 disables StructReg).
    """

    alpha: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.alpha >= 0:
            raise ValueError(f"alpha must be >= 0 (0 disables StructReg), got alpha={self.alpha}")


@dataclass
class _Layer:
    """The six linear modules of one encoder layer, and their parameter FQNs."""

    prefix: str
    modules: dict[str, nn.Linear]

    def fqn(self, role: str, kind: str = "weight") -> str:
        return f"{self.prefix}{_ROLES[role]}.{kind}"


class GrainMethod(PruningMethod):
    """GRAIN: query, value and FFN units, Taylor scores from the distillation loss only,
    StructReg, global parameter-weighted ranking (see the module docstring and SPEC §3).

    When the trial calls each hook (``rayprune.methods.base``):

    * :meth:`prepare` (once): find the encoder layers, create unit state and the projections;
    * :meth:`extra_parameters` (once): the projections, which the trial adds to the optimizer;
    * :meth:`task_loss` / :meth:`extra_loss` (every step): logit KD / hidden-state loss;
    * :meth:`after_backward` (every step, task-loss gradients only): update the smoothed scores;
    * :meth:`step` (each masking step of the schedule): grow the pruned set to ``sparsity``;
    * :meth:`finalize` (once): return the physically smaller model.
    """

    Options: ClassVar[type[MethodOptions]] = GrainOptions
    description = (
        "GRAIN (ACL 2023): structured query/value/FFN units, Taylor scores from logit KD only, "
        "StructReg, hidden-state distillation; exports a smaller model"
    )
    needs_teacher = True
    needs_hidden_states = True
    structured = True
    default_scope = "encoder_linear"
    schedule_defaults = {"kind": "cubic", "initial_sparsity": 0.0, "start": 0.2, "end": 0.4, "interval": 1}

    # Unit kinds of this method, in the order of the flat unit vector.
    unit_kinds: ClassVar[tuple[str, ...]] = ("query", "value", "ffn")

    def __init__(self, options: MethodOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self._layers: list[_Layer] = []
        self._where: dict[str, tuple[int, str]] = {}  # fqn -> (layer index, role)
        self._ema: dict[str, torch.Tensor] = {}  # kind -> (layers, units per layer) float
        self._alive: dict[str, torch.Tensor] = {}  # kind -> (layers, units per layer) bool
        self._projections: nn.ModuleList | None = None
        self._hidden_indices: list[int] = []
        self._encoder_total = 0

    # ------------------------------------------------------------------ lifecycle
    def prepare(self, model: nn.Module, targets: Sequence[str], context: TrainingContext) -> None:
        """Find the encoder layers that ``targets`` touch and track all their unit parameters.

        The prunable set is the units', whatever the scope: the weights *and* the biases of Q, K,
        V and W_1, and the weights of W_O and W_2 of every layer named in ``targets``.  The biases
        of W_O and W_2 belong to no unit and are never pruned (``encoder_linear_bias`` is accepted
        but prunes the same set as the default ``encoder_linear``).

        Raises:
            ValueError: no BERT-family layer in ``targets``, a target outside every unit, or
                layers without the dense shapes.
        """
        super().prepare(model, targets, context)
        self._where = {}
        modules = dict(model.named_modules())
        suffix = "." + _ROLES["query"]
        prefixes = []
        for name in modules:
            if name.endswith(suffix):
                prefix = name[: -len(_ROLES["query"])]
                if any(t.startswith(prefix) for t in targets):
                    prefixes.append(prefix)
        if not prefixes:
            raise ValueError(
                f"{type(self).__name__} needs a BERT-family encoder (modules named "
                f"'<layer>.{_ROLES['query']}', ...); none of the targets lies in one: {list(targets)[:3]}"
            )
        layers = []
        for prefix in prefixes:
            found = {}
            for role, path in _ROLES.items():
                module = modules.get(prefix + path)
                if not isinstance(module, nn.Linear):
                    raise ValueError(f"encoder layer {prefix!r} has no nn.Linear at {path!r}")
                found[role] = module
            layers.append(_Layer(prefix, found))
        self._layers = layers

        config = model.config
        self.num_heads = int(config.num_attention_heads)
        first = layers[0].modules
        self.hidden_size = first["query"].in_features
        self.head_size = self.hidden_size // self.num_heads
        self.ffn_size = first["ffn_in"].out_features
        # Units are defined on the dense shapes; an already shrunk model has other sizes.
        width = self.num_heads * self.head_size
        for layer in layers:
            m = layer.modules
            shapes = [m[r].weight.shape for r in ("query", "key", "value")]
            if (
                any(tuple(s) != (width, self.hidden_size) for s in shapes)
                or tuple(m["attn_out"].weight.shape) != (self.hidden_size, width)
                or tuple(m["ffn_in"].weight.shape) != (self.ffn_size, self.hidden_size)
                or tuple(m["ffn_out"].weight.shape) != (self.hidden_size, self.ffn_size)
            ):
                raise ValueError(
                    f"{type(self).__name__} needs the dense shapes in every layer (Q/K/V "
                    f"{width}x{self.hidden_size}, FFN {self.ffn_size}); layer {layer.prefix!r} differs "
                    "(an already shrunk model cannot be pruned again: start from the dense one)"
                )

        params: dict[str, nn.Parameter] = {}
        for index, layer in enumerate(layers):
            for role, module in layer.modules.items():
                kinds = ["weight"]
                if module.bias is not None and role not in ("attn_out", "ffn_out"):
                    kinds.append("bias")  # the output biases belong to no unit
                for kind in kinds:
                    fqn = layer.fqn(role, kind)
                    params[fqn] = getattr(module, kind)
                    self._where[fqn] = (index, role)
        # The output biases (W_O's, W_2's) are in the encoder but in no unit: never pruned.
        unitless = {layer.fqn(role, "bias") for layer in layers for role in ("attn_out", "ffn_out")}
        outside = [t for t in targets if t not in params and t not in unitless]
        if outside:
            raise ValueError(
                f"{type(self).__name__} prunes whole units; these targets belong to none "
                f"(use the scope 'encoder_linear' or 'encoder_linear_bias'): {outside[:5]}"
            )
        self.params = params
        self.masks = {fqn: torch.ones_like(p, dtype=torch.bool) for fqn, p in params.items()}

        # Density is counted over every parameter of the encoder blocks (SPEC §1, §3.6).
        named = dict(model.named_parameters())
        self._encoder_total = sum(
            p.numel() for n, p in named.items() if any(n.startswith(layer.prefix) for layer in layers)
        )
        device = first["query"].weight.device
        counts = self._units_per_layer()
        self._ema = {k: torch.zeros(len(layers), n, device=device) for k, n in counts.items()}
        self._alive = {k: torch.ones(len(layers), n, dtype=torch.bool, device=device) for k, n in counts.items()}
        self._build_unit_tables(device)
        self._build_projections(model, device)
        if self.options.embedding_rank:
            # Before the trial builds its optimizer, so the optimizer trains the two factors.
            from rayprune.methods.structured.models import factorize_word_embeddings

            factorize_word_embeddings(model, self.options.embedding_rank)

    def _build_unit_tables(self, device: torch.device) -> None:
        """Flat per-unit parameter costs, and for query/value units the (global) head they
        belong to, for the "no value units -> no query units" cascade (-1 elsewhere)."""
        m = self._layers[0].modules
        bias = lambda role: int(m[role].bias is not None)  # noqa: E731
        costs = self._unit_costs(self.hidden_size, bias)
        layers = len(self._layers)
        flat_cost, trigger, follower = [], [], []
        counts = self._units_per_layer()
        for kind in self.unit_kinds:  # the order of the flat unit vector (_flat)
            n = counts[kind]
            flat_cost.append(torch.full((layers * n,), float(costs[kind]), dtype=torch.float64))
            none = torch.full((layers * n,), -1, dtype=torch.long)
            if kind in ("query", "value"):
                rows = torch.arange(layers * n)  # layer-major: layer * n + row
                heads = (rows // n) * self.num_heads + (rows % n) // self.head_size
            trigger.append(heads if kind == "value" else none)
            follower.append(heads if kind == "query" else none)
        self._flat_cost = torch.cat(flat_cost).to(device)
        self._flat_trigger = torch.cat(trigger).to(device)
        self._flat_follower = torch.cat(follower).to(device)

    def _build_projections(self, model: nn.Module, device: torch.device) -> None:
        depth = int(model.config.num_hidden_layers)
        option = self.options.hidden_layers
        if option == "every_other":
            indices = sorted(set(range(0, depth + 1, 2)) | {depth})
        elif option == "all":
            indices = list(range(depth + 1))
        else:
            indices = list(option)
            if indices[-1] > depth:
                raise ValueError(
                    f"hidden_layers index {indices[-1]} out of range: the model has {depth + 1} "
                    f"hidden states (0 = embeddings .. {depth})"
                )
        self._hidden_indices = indices
        if self.options.hidden_loss_weight == 0:
            self._projections = None
            return
        dtype = self._layers[0].modules["query"].weight.dtype
        projections = []
        for _ in indices:
            proj = nn.Linear(self.hidden_size, self.hidden_size, device=device, dtype=dtype)
            nn.init.eye_(proj.weight)  # identity start, as the official distiller
            nn.init.zeros_(proj.bias)
            projections.append(proj)
        self._projections = nn.ModuleList(projections)

    def extra_parameters(self) -> list[nn.Parameter]:
        """The hidden-state projections W_i (trained with the weights, never pruned)."""
        return [] if self._projections is None else list(self._projections.parameters())

    # ------------------------------------------------------------------ unit definitions
    def _units_per_layer(self) -> dict[str, int]:
        return {
            "query": self.num_heads * self.head_size,
            "value": self.num_heads * self.head_size,
            "ffn": self.ffn_size,
        }

    def _unit_costs(self, d: int, bias) -> dict[str, int]:
        return {
            "query": 2 * d + bias("query") + bias("key"),
            "value": 2 * d + bias("value"),
            "ffn": 2 * d + bias("ffn_in"),
        }

    def _importance(self, layer: _Layer) -> dict[str, torch.Tensor]:
        """This step's IS of every unit of ``layer`` from the current ``.grad`` (task loss)."""
        m = layer.modules
        q_gate = _grad_dot(m["query"].weight, dim=1)  # (H * d_head,)
        if m["query"].bias is not None:
            q_gate = q_gate + _grad_dot(m["query"].bias)
        return {
            "query": q_gate.abs(),
            "value": _grad_dot(m["attn_out"].weight, dim=0).abs(),  # columns of W_O
            "ffn": _grad_dot(m["ffn_out"].weight, dim=0).abs(),  # columns of W_2
        }

    def _regularise(self, updates: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """StructReg: scale value-unit updates by tanh(D/α), D = value-unit density of the head."""
        alpha = self.options.alpha
        if alpha > 0:
            alive = self._alive["value"].view(len(self._layers), self.num_heads, self.head_size)
            density = alive.float().mean(dim=2, keepdim=True)  # (layers, H, 1)
            scaled = updates["value"].view_as(alive) * torch.tanh(density / alpha)
            updates["value"] = scaled.view_as(updates["value"])
        return updates

    def _row_values(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-unit values (scores or alive flags) -> per-row values of the Q/K rows, the V rows
        and the FFN rows, each (layers, rows)."""
        return {"qk": values["query"], "vo": values["value"], "ffn": values["ffn"]}

    def _cascade(self) -> bool:
        """Whether a head without value units loses its query units (GRAIN's units)."""
        return True

    # ------------------------------------------------------------------ hooks
    def task_loss(self, outputs: Any, batch: Mapping[str, torch.Tensor], teacher_outputs: Any):
        """Soft cross-entropy to the teacher's logits at temperature τ (no hard labels; MSE to
        the teacher's output for regression).  Its gradient is what :meth:`after_backward`
        scores.  Without a teacher (``None``) the model's own loss is used."""
        if teacher_outputs is None:
            return None
        task = self.context.task if self.context is not None else None
        if task is None:  # a method driven without a task (unit tests): one logit vector per example
            pairs = [(outputs.logits, teacher_outputs.logits)]
        else:  # QA: start and end logits; NER: the labelled tokens (Task.logit_rows)
            pairs = [(s, t) for (s, _), (t, _) in zip(task.logit_rows(outputs, batch),
                                                      task.logit_rows(teacher_outputs, batch))]
        regression = (self.context is not None and self.context.is_regression) or pairs[0][0].shape[-1] == 1
        tau = self.options.temperature
        losses = []
        for student, teacher in pairs:
            teacher = teacher.detach()
            if regression:
                losses.append(F.mse_loss(student, teacher.to(student.dtype)))
            elif student.shape[0]:
                # cross_entropy with probability targets = -(p_T · log softmax(z_S / τ)).sum(-1).mean()
                losses.append(F.cross_entropy(student / tau, F.softmax(teacher / tau, dim=-1)))
        return sum(losses) / len(losses) if losses else None

    def extra_loss(self, outputs: Any, batch: Mapping[str, torch.Tensor], teacher_outputs: Any):
        """L_Hidden: Σ_i MSE(proj_i(H_i^S), H_i^T) over the chosen hidden states, averaged over
        the real tokens.  Back-propagated after :meth:`after_backward`, so it trains the weights
        (and the projections) without entering the scores.  ``None`` without a teacher or with
        ``hidden_loss_weight=0``."""
        if teacher_outputs is None or self._projections is None:
            return None
        student, teacher = outputs.hidden_states, teacher_outputs.hidden_states
        if student is None or teacher is None:
            raise ValueError(
                f"{type(self).__name__}.extra_loss needs hidden states from the student and the "
                "teacher: run both forwards with output_hidden_states=True (needs_hidden_states)"
            )
        mask = batch.get("attention_mask") if isinstance(batch, Mapping) else None
        loss = 0.0
        for proj, index in zip(self._projections, self._hidden_indices):
            loss = loss + _masked_mse(proj(student[index]), teacher[index].detach(), mask)
        return self.options.hidden_loss_weight * loss

    @torch.no_grad()
    def after_backward(self, model: nn.Module) -> None:
        """Fold this step's IS (from the task loss's gradients) into the smoothed scores."""
        per_layer = [self._importance(layer) for layer in self._layers]
        updates = {k: torch.stack([u[k] for u in per_layer]).float() for k in self.unit_kinds}
        updates = self._regularise(updates)
        beta = self.options.beta
        for kind, update in updates.items():
            self._ema[kind].mul_(beta).add_(update, alpha=1.0 - beta)

    @torch.no_grad()
    def step(self, sparsity: float) -> dict[str, float]:
        """Remove the lowest-scored units until the removed share of encoder parameters reaches
        ``sparsity`` (units weighted by their parameter counts; masks only grow).

        Returns:
            the measured sparsity (fraction of zeros) of every tracked parameter.
        """
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got sparsity={sparsity}")
        reselect = self._reselecting()
        alive = self._flat(self._alive)
        score = self._unit_scores()
        if reselect:
            # Every unit may be chosen again; at a tie the current state wins.
            score = mask_ops.prefer_current(score, alive)
            alive = torch.ones_like(alive)
        dead = _select_units(
            score=score,
            alive=alive,
            cost=self._flat_cost,
            target=sparsity * self._encoder_total,
            trigger=self._flat_trigger if self._cascade() else None,
            follower=self._flat_follower if self._cascade() else None,
            num_groups=len(self._layers) * self.num_heads,
        )
        self._alive = self._unflat(alive & ~dead, self._alive)
        self._update_masks(reselect)
        self.apply_masks()
        return self.target_sparsity()

    def _unit_scores(self) -> torch.Tensor:
        """Flat smoothed score of every unit (the order of ``_flat``), what :meth:`step` ranks."""
        return self._flat(self._ema)

    def score(self, fqn: str, weight: torch.Tensor) -> torch.Tensor:
        """Smoothed score of the unit each entry of ``weight`` belongs to (for inspection; the
        ranking itself works on units)."""
        return self._expand(fqn, self._row_values(self._ema)).float().expand_as(weight).clone()

    def finalize(self) -> nn.Module:
        """Bake the masks and return a physically smaller model with the same head
        (:class:`rayprune.methods.structured.models.PrunedBertForSequenceClassification`, or its
        QA / token-classification twin).  Models that
        :func:`~rayprune.methods.structured.models.shrink_model` cannot rebuild (not a BERT with
        one of those heads) are returned masked in place, with a warning."""
        from rayprune.methods.structured.models import shrink_model

        self.apply_masks()
        model = self.model
        try:
            model = shrink_model(model)
        except TypeError as err:
            warnings.warn(f"{type(self).__name__}.finalize: kept zeros in place: {err}", stacklevel=2)
        self.params = {}
        self._projections = None
        return model

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["scores"] = {k: v.cpu() for k, v in self._ema.items()}
        state["alive"] = {k: v.cpu() for k, v in self._alive.items()}
        if self._projections is not None:
            state["projections"] = {k: v.cpu() for k, v in self._projections.state_dict().items()}
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key, target in (("scores", self._ema), ("alive", self._alive)):
            for kind, value in state[key].items():
                if kind not in target or target[kind].shape != value.shape:
                    raise ValueError(f"checkpoint {key}[{kind!r}] does not match this model's units")
                target[kind] = value.to(target[kind].device, dtype=target[kind].dtype)
        if self._projections is not None and "projections" in state:
            self._projections.load_state_dict(state["projections"])
        super().load_state_dict(state)

    # ------------------------------------------------------------------ helpers
    def _flat(self, per_kind: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([per_kind[k].reshape(-1) for k in self.unit_kinds])

    def _unflat(self, flat: torch.Tensor, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out, offset = {}, 0
        for kind in self.unit_kinds:
            n = like[kind].numel()
            out[kind] = flat[offset : offset + n].view_as(like[kind])
            offset += n
        return out

    def _expand(self, fqn: str, rows: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-row values of layer and role of ``fqn`` shaped to broadcast over the parameter:
        (rows, 1) for Q/K/V/W_1 weights, (1, cols) for W_O/W_2, (rows,) for biases."""
        if fqn not in self._where:
            raise KeyError(f"{fqn!r} is not a parameter of any {type(self).__name__} unit")
        index, role = self._where[fqn]
        group = {"query": "qk", "key": "qk", "value": "vo", "attn_out": "vo", "ffn_in": "ffn", "ffn_out": "ffn"}[role]
        values = rows[group][index]
        if fqn.endswith(".bias"):
            return values
        return values[None, :] if role in ("attn_out", "ffn_out") else values[:, None]

    def _update_masks(self, reselect: bool = False) -> None:
        """Per-parameter masks from the alive units: grown (``&=``) or, when reselecting,
        replaced through the base (which records what changed)."""
        keep = self._row_values(self._alive)
        new = {fqn: self._expand(fqn, keep).expand_as(p).clone() for fqn, p in self.params.items()}
        if reselect:
            self._replace_masks(new)
            return
        for fqn in self.params:
            self.masks[fqn] &= new[fqn]


class HeadFFNMethod(GrainMethod):
    """The heads+FFN baseline of the GRAIN paper (SPEC §3.6): whole attention heads and FFN
    neurons as units; the same scores (a head's IS is |Σ g·w| over its W_O columns, the Taylor
    estimate for a gate on the head's output, as in Michel et al. 2019 and the official code),
    distillation, gradient separation, schedule and export as :class:`GrainMethod`, without
    StructReg (a head is either whole or gone)."""

    Options: ClassVar[type[MethodOptions]] = HeadFFNOptions
    description = (
        "Heads+FFN structured pruning (GRAIN's baseline): whole heads and FFN neurons, Taylor "
        "scores from logit KD only, hidden-state distillation; exports a smaller model"
    )
    unit_kinds: ClassVar[tuple[str, ...]] = ("head", "ffn")

    def _units_per_layer(self) -> dict[str, int]:
        return {"head": self.num_heads, "ffn": self.ffn_size}

    def _unit_costs(self, d: int, bias) -> dict[str, int]:
        per_qk = 2 * d + bias("query") + bias("key")
        per_vo = 2 * d + bias("value")
        return {"head": self.head_size * (per_qk + per_vo), "ffn": 2 * d + bias("ffn_in")}

    def _importance(self, layer: _Layer) -> dict[str, torch.Tensor]:
        m = layer.modules
        value_gates = _grad_dot(m["attn_out"].weight, dim=0)  # (H * d_head,)
        return {
            "head": value_gates.view(self.num_heads, self.head_size).sum(dim=1).abs(),
            "ffn": _grad_dot(m["ffn_out"].weight, dim=0).abs(),
        }

    def _regularise(self, updates: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return updates

    def _row_values(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        rows = values["head"].repeat_interleave(self.head_size, dim=1)  # (layers, H * d_head)
        return {"qk": rows, "vo": rows, "ffn": values["ffn"]}

    def _cascade(self) -> bool:
        return False


# ---------------------------------------------------------------------------- pure helpers


def _grad_dot(param: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Σ (∂L/∂w)·w over ``dim`` (elementwise for 1-D); zeros when there is no gradient."""
    if param.grad is None:
        shape = param.shape if dim is None else param.shape[1 - dim : 2 - dim]
        return torch.zeros(shape, device=param.device)
    product = param.grad.float() * param.detach().float()
    return product if dim is None else product.sum(dim=dim)


def _masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over the real tokens: ``mask`` (B, L) is 1 for tokens, 0 for padding."""
    if mask is None:
        return F.mse_loss(prediction, target)
    weight = mask.to(prediction.dtype).unsqueeze(-1)  # (B, L, 1)
    squared = (prediction - target).pow(2) * weight
    return squared.sum() / (weight.sum() * prediction.shape[-1]).clamp_min(1.0)


@torch.no_grad()
def _select_units(
    *,
    score: torch.Tensor,
    alive: torch.Tensor,
    cost: torch.Tensor,
    target: float,
    trigger: torch.Tensor | None = None,
    follower: torch.Tensor | None = None,
    num_groups: int = 0,
) -> torch.Tensor:
    """Which alive units to remove so that the removed cost reaches ``target``.

    Alive units are taken in ascending ``score`` (ties by index) until the cost of everything
    removed (before and now) is at least ``target``.  With ``trigger``/``follower`` (group id per
    unit, -1 for none), removing the last alive trigger unit of a group also removes that group's
    alive followers at the same moment (a head's last value unit takes its query units along).

    Args:
        score, alive, cost: flat per-unit tensors (float, bool, float64).
        target: removed cost to reach.

    Returns:
        bool tensor, True for units to remove now (a subset of ``alive``).
    """
    removed = float(cost[~alive].sum())
    dead = torch.zeros_like(alive)
    candidates = alive.nonzero().squeeze(1)  # (A,)
    if candidates.numel() == 0:
        return dead
    order = candidates[torch.argsort(score[candidates], stable=True)]
    position = torch.full_like(cost, -1, dtype=torch.long)
    position[order] = torch.arange(order.numel(), device=order.device)
    when = position.clone()  # the rank at which each alive unit goes
    if trigger is not None and follower is not None:
        last = torch.full((num_groups,), -1, dtype=torch.long, device=order.device)
        is_trigger = alive & (trigger >= 0)
        last.scatter_reduce_(0, trigger[is_trigger], position[is_trigger], reduce="amax")
        is_follower = alive & (follower >= 0)
        when[is_follower] = torch.minimum(position[is_follower], last[follower[is_follower]])
    # Followers of a group that has no trigger left (-1) go at once (keeps the state consistent).
    immediate = alive & (when < 0)
    dead |= immediate
    removed += float(cost[immediate].sum())
    if removed >= target:
        return dead
    scheduled = alive & (when >= 0)
    cost_at = torch.zeros(order.numel(), dtype=torch.float64, device=cost.device)
    cost_at.index_add_(0, when[scheduled], cost[scheduled].double())
    cumulative = removed + torch.cumsum(cost_at, dim=0)  # removed cost after each rank
    cut = int(torch.searchsorted(cumulative, torch.tensor([target], dtype=torch.float64, device=cost.device)))
    cut = min(cut, order.numel() - 1)  # not reachable: remove everything
    dead |= scheduled & (when <= cut)
    return dead
