"""The contract every registered pruning method keeps (STYLE §8), checked on a tiny BERT.

Each method is driven through the trial loop's hooks (``rayprune.training.loop.method_step_hooks``,
what the loop itself calls) for a few optimizer steps on a real batch, with a schedule that
reaches ``FINAL_SPARSITY`` at the last step.  Every check is parametrized by method name, so a
method whose module does not import (yet) fails under its own id instead of being skipped.

Structured methods (class attribute ``structured = True``) count sparsity over the encoder's
parameters and remove whole units, so the per-element sparsity check becomes a range check and
the ``finalize`` key check is replaced by "the smaller model still runs".

One-shot methods (``one_shot = True``: Wanda, SparseGPT) prune once from calibration data at
their schedule's one masking step: they run under their own ``oneshot`` schedule (pruning inside
``prepare``, before the first step), read the calibration batches every run is given, and under
``reselect`` there is no later masking step inside a ramp, so the entry whose score rises stays
pruned (the "comes back" check becomes "nothing comes back").

Both mask policies are checked for every method (``mask_policy`` is an option of each): under
``persistent`` pruned entries stay pruned, under ``reselect`` an entry whose score rises comes
back while the ramp lasts; after the ramp nothing changes under either.  A score "rises" through
:func:`_raising`, a subclass whose selection sees one chosen pruned entry (or unit) score highest,
as the method's own statistics would after enough steps.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import typing

from rayprune.methods import (
    MethodOptions,
    PruningMethod,
    SparsitySchedule,
    TrainingContext,
    available_methods,
    get_method,
)
from rayprune.methods.base import MASK_POLICIES
from rayprune.models import encoder_parameters, prunable_targets
from rayprune.training.loop import method_step_hooks

METHODS = available_methods()
FINAL_SPARSITY = 0.5
NEXT_SPARSITY = 0.7  # a later masking step that must prune more, from restored statistics
TOTAL_STEPS = 4
LEARNING_RATE = 1e-3


@dataclass
class Run:
    """One method driven on one tiny model, as a trial would."""

    cls: type[PruningMethod]
    method: PruningMethod
    model: nn.Module
    teacher: nn.Module | None
    optimizer: torch.optim.Optimizer
    context: TrainingContext
    schedule: SparsitySchedule
    targets: list[str]
    keys_before: list[str]


def _randomize_biases(model: nn.Module, seed: int) -> None:
    """BERT initialises biases to exactly 0; a pretrained model has none at 0, and measured
    sparsity counts exact zeros, so give them small non-zero values."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.02)


def _raising(cls: type[PruningMethod]) -> type[PruningMethod]:
    """``cls`` whose selection sees ``raised`` (``(fqn, flat index)`` of an entry, or ``("unit",
    index)`` of a structured unit) with a score above every other; ``None`` = unchanged."""

    class Raised(cls):
        raised: tuple[str, int] | None = None

        def _top(self, scores: torch.Tensor, index: int) -> torch.Tensor:
            scores = scores.detach().clone()
            scores.view(-1)[index] = float(scores.max()) + 1.0
            return scores

        def score(self, fqn, weight):
            scores = super().score(fqn, weight)
            if self.raised is not None and self.raised[0] == fqn:
                return self._top(scores, self.raised[1])
            return scores

        def flat_scores(self):
            scores = super().flat_scores()
            if self.raised is None or self.raised[0] == "unit":
                return scores
            fqn, index = self.raised
            offset = 0
            for f, p in self.params.items():  # flat order = target order
                if f == fqn:
                    break
                offset += p.numel()
            return self._top(scores, offset + index)

        def _unit_scores(self):
            scores = super()._unit_scores()
            if self.raised is not None and self.raised[0] == "unit":
                return self._top(scores, self.raised[1])
            return scores

    Raised.__name__ = Raised.__qualname__ = f"Raised{cls.__name__}"
    return Raised


def _calibration(batch: dict[str, torch.Tensor] | None):
    """``calibration_batches`` over ``batch`` without its labels, repeated to the samples asked."""
    if batch is None:
        return None
    inputs = {k: v for k, v in batch.items() if k != "labels"}

    def batches(samples: int, seed: int):
        rows = inputs["input_ids"].shape[0]
        for start in range(0, samples, rows):
            take = min(rows, samples - start)
            yield {k: v[:take] for k, v in inputs.items()}

    return batches


def _start(name: str, make_tiny_bert, *, seed: int = 0, policy: str | None = None,
           raising: bool = False, calibration_batch: dict[str, torch.Tensor] | None = None) -> Run:
    cls = get_method(name)  # an import error fails this method's test
    if raising:
        cls = _raising(cls)
    model = make_tiny_bert(seed=seed)
    _randomize_biases(model, seed)
    keys_before = list(model.state_dict())
    teacher = copy.deepcopy(model).eval() if cls.needs_teacher else None
    kind = "oneshot" if cls.one_shot else "cubic"
    schedule = SparsitySchedule(final_sparsity=FINAL_SPARSITY, kind=kind, start=0.0, end=1.0, interval=1)
    context = TrainingContext(
        total_steps=TOTAL_STEPS,
        num_train_examples=64,
        learning_rate=LEARNING_RATE,
        schedule=schedule,
        evaluate_selection=lambda m: 0.5,
        tokenizer=None,
        seed=seed,
        calibration_batches=_calibration(calibration_batch),
    )
    torch.manual_seed(seed)
    method = cls() if policy is None else cls(mask_policy=policy)
    targets = prunable_targets(model, cls.default_scope)
    method.prepare(model, targets, context)
    params = list(model.parameters()) + list(method.extra_parameters())
    optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE)
    return Run(cls, method, model, teacher, optimizer, context, schedule, targets, keys_before)


def _forward(run: Run, batch: dict[str, torch.Tensor]):
    """A step's forwards and loss hooks, as the trial runs them: (outputs, task loss, extra loss
    or ``None``)."""
    method, model = run.method, run.model
    hidden = run.cls.needs_hidden_states
    outputs = model(**batch, output_hidden_states=hidden)
    teacher_outputs = None
    if run.teacher is not None:
        with torch.no_grad():
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            teacher_outputs = run.teacher(**inputs, output_hidden_states=hidden)
    loss = method.task_loss(outputs, batch, teacher_outputs)
    if loss is None:
        loss = outputs.loss
    extra = method.extra_loss(outputs, batch, teacher_outputs)
    return outputs, loss, extra


def _train(run: Run, batch: dict[str, torch.Tensor], steps: int = TOTAL_STEPS, *, forward=_forward) -> None:
    """Trial steps: ``forward`` (:func:`_forward`), the task loss's backward, then the loop's
    hooks (``rayprune.training.loop.method_step_hooks``, the one definition of their order)."""
    method, model, ctx = run.method, run.model, run.context

    def optimizer_step(finite):
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)

    for step in range(steps):
        ctx.step, ctx.learning_rate = step, LEARNING_RATE
        _, loss, extra = forward(run, batch)
        loss.backward(retain_graph=extra is not None)
        method_step_hooks(method, model, step=step, total=TOTAL_STEPS, schedule=run.schedule,
                          optimizer_step=optimizer_step,
                          extra_backward=None if extra is None else extra.backward)


def _trained(name, make_tiny_bert, batch, *, seed=0, policy=None, raising=False) -> Run:
    run = _start(name, make_tiny_bert, seed=seed, policy=policy, raising=raising, calibration_batch=batch)
    _train(run, batch)
    return run


def _a_pruned_entry(run: Run) -> tuple[str, int]:
    """``(fqn, flat index)`` of the first pruned entry (unstructured methods), or ``("unit",
    index)`` of the first removed unit (structured methods)."""
    if run.cls.structured:
        dead = (~run.method._flat(run.method._alive)).nonzero()
        assert dead.numel(), "no unit was removed"
        return "unit", int(dead[0])
    for fqn, mask in run.method.masks.items():
        pruned = (~mask).reshape(-1).nonzero()
        if pruned.numel():
            return fqn, int(pruned[0])
    raise AssertionError("no entry was pruned")


def _is_kept(run: Run, raised: tuple[str, int]) -> bool:
    kind, index = raised
    if kind == "unit":
        return bool(run.method._flat(run.method._alive)[index])
    return bool(run.method.masks[kind].reshape(-1)[index])


def _masks(method: PruningMethod) -> dict[str, torch.Tensor]:
    return {fqn: m.detach().clone().cpu() for fqn, m in method.masks.items()}


def _perturb(model: nn.Module, seed: int) -> None:
    """An optimizer step's worth of change to every weight, pruned ones included."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * 1e-2)


def _unit_share(model: nn.Module) -> float:
    """Share of the encoder's parameters in the largest structured unit: one attention head
    (its Q, K, V rows and biases plus its W_O columns: 4·d·d_head + 3·d_head)."""
    d = model.config.hidden_size
    d_head = d // model.config.num_attention_heads
    total = sum(p.numel() for p in encoder_parameters(model).values())
    return (4 * d * d_head + 3 * d_head) / total


def _zeros(tensors) -> tuple[int, int]:
    zeros = sum(int((t == 0).sum()) for t in tensors)
    return zeros, sum(t.numel() for t in tensors)


# ---------------------------------------------------------------------------- the contract
@pytest.mark.parametrize("name", METHODS)
def test_masks_have_the_weights_shapes(name, make_tiny_bert, tiny_batch):
    run = _trained(name, make_tiny_bert, tiny_batch)
    named = dict(run.model.named_parameters())
    assert run.method.masks, f"{name} holds no masks after prepare + step"
    for fqn, mask in run.method.masks.items():
        assert fqn in named, f"{name} has a mask for {fqn!r}, not a parameter of the model"
        assert mask.dtype == torch.bool
        assert mask.shape == named[fqn].shape, fqn


@pytest.mark.parametrize("name", METHODS)
def test_measured_sparsity_matches_the_request(name, make_tiny_bert, tiny_batch):
    run = _trained(name, make_tiny_bert, tiny_batch)  # the last step asked for FINAL_SPARSITY
    if run.cls.structured:
        # Encoder-parameter sparsity, whole units: may overshoot by a unit, never undershoot by
        # more than one.
        zeros, total = _zeros(encoder_parameters(run.model).values())
        assert FINAL_SPARSITY - _unit_share(run.model) <= zeros / total <= 1.0
        return
    params = dict(run.model.named_parameters())
    targets = [params[fqn] for fqn in run.method.masks]
    # Every pruned entry is zero in the weights ...
    for fqn, mask in run.method.masks.items():
        assert not params[fqn][~mask].any(), f"{fqn} has non-zero pruned entries"
    # ... and the zeros are the request to within one element per selection group.
    if getattr(run.method.options, "selection", "global") == "layer":
        for fqn, param in zip(run.method.masks, targets):
            zeros, total = _zeros([param])
            assert abs(zeros - FINAL_SPARSITY * total) <= 1, (
                f"{name}: {fqn} has {zeros}/{total} zeros after step({FINAL_SPARSITY})"
            )
    else:
        zeros, total = _zeros(targets)
        assert abs(zeros - FINAL_SPARSITY * total) <= 1, (
            f"{name}: {zeros}/{total} zeros over its targets after step({FINAL_SPARSITY})"
        )


@pytest.mark.parametrize("name", METHODS)
def test_every_method_has_a_mask_policy_option(name):
    cls = get_method(name)
    fields = {f.name: f for f in cls.option_fields()}
    assert "mask_policy" in fields, f"{name} has no mask_policy option"
    field = fields["mask_policy"]
    assert typing.get_args(typing.get_type_hints(cls.Options)["mask_policy"]) == MASK_POLICIES
    assert field.default in MASK_POLICIES
    assert field.metadata.get("help"), f"{name}.mask_policy has no help text"
    for policy in MASK_POLICIES:
        assert cls(mask_policy=policy).options.mask_policy == policy
    with pytest.raises(ValueError, match="mask_policy"):
        cls(mask_policy="sometimes")


def test_default_mask_policies_are_the_papers():
    expected = {
        "magnitude": "persistent", "grain": "persistent", "head_ffn": "persistent",
        "rpp": "persistent", "movement": "reselect", "soft_movement": "reselect",
        "seven": "reselect", "platon": "reselect", "pins": "reselect", "mgpp": "reselect",
        "wanda": "persistent", "sparsegpt": "persistent",
    }
    assert {name: get_method(name).Options().mask_policy for name in expected} == expected
    assert MethodOptions().mask_policy == "persistent"


@pytest.mark.parametrize("name", METHODS)
def test_pruned_entries_stay_pruned(name, make_tiny_bert, tiny_batch):
    run = _trained(name, make_tiny_bert, tiny_batch, policy="persistent", raising=True)
    before = _masks(run.method)
    params = dict(run.model.named_parameters())
    # Weights move (as after an optimizer step) and a pruned entry's score rises above all
    # others, then another masking step at the same target, still inside the ramp.
    _perturb(run.model, seed=11)
    raised = run.method.raised = _a_pruned_entry(run)
    run.method.step(FINAL_SPARSITY)
    run.method.apply_masks()
    after = _masks(run.method)
    assert not _is_kept(run, raised), f"{name} (persistent) revived the entry whose score rose"
    for fqn, mask in before.items():
        assert not (after[fqn] & ~mask).any(), f"{name} revived pruned entries of {fqn}"
        assert not params[fqn].detach().cpu()[~mask].any(), f"{fqn}: pruned entries not zero"
    # apply_masks alone re-zeroes what a perturbation brought back.
    _perturb(run.model, seed=12)
    run.method.apply_masks()
    for fqn, mask in after.items():
        assert not params[fqn].detach().cpu()[~mask].any(), f"{fqn}: apply_masks left non-zeros"


@pytest.mark.parametrize("name", METHODS)
def test_reselect_brings_back_an_entry_whose_score_rises(name, make_tiny_bert, tiny_batch):
    run = _trained(name, make_tiny_bert, tiny_batch, policy="reselect", raising=True)
    method, params = run.method, dict(run.model.named_parameters())
    last = run.schedule.steps(TOTAL_STEPS)[1]
    assert run.context.step <= last  # still inside the ramp: the last masking step
    raised = method.raised = _a_pruned_entry(run)
    stored = None
    if not run.cls.structured:
        values = method.pruned_values(raised[0])
        stored = None if values is None else float(values.reshape(-1)[raised[1]])
    method.step(FINAL_SPARSITY)
    method.apply_masks()
    if run.cls.one_shot:
        # Its one masking step is behind it: the mask is frozen under either policy.
        assert not _is_kept(run, raised), f"{name} (one-shot) brought an entry back after its pass"
        assert method.diagnostics().get("returned", 0.0) == 0.0
        return
    assert _is_kept(run, raised), f"{name} (reselect) kept out the entry whose score rose"
    if not run.cls.structured:
        fqn, index = raised
        value = float(params[fqn].detach().reshape(-1)[index])
        if run.cls.keeps_pruned_values:
            # The dense weight under the mask: it resumes from its trained value.
            assert stored is not None and stored != 0.0 and value == stored, (name, stored, value)
        else:
            assert value == 0.0, f"{name} zeroes in place: a returning weight restarts from 0"
        # Still exactly the requested sparsity: another entry went instead.
        zeros, total = _zeros([params[f] for f in method.masks])
        groups = len(method.masks) if method.options.selection == "layer" else 1
        assert abs(zeros - FINAL_SPARSITY * total) <= groups
        assert method.diagnostics()["mask_changed_last"] > 0
        assert method.diagnostics()["returned"] > 0
    for fqn, mask in method.masks.items():
        assert not params[fqn].detach()[~mask].any(), f"{fqn}: pruned entries not zero"


@pytest.mark.parametrize("policy", MASK_POLICIES)
@pytest.mark.parametrize("name", METHODS)
def test_nothing_changes_after_the_ramp(name, policy, make_tiny_bert, tiny_batch):
    run = _trained(name, make_tiny_bert, tiny_batch, policy=policy, raising=True)
    run.context.step = TOTAL_STEPS  # past the ramp's last masking step
    before = _masks(run.method)
    run.method.raised = _a_pruned_entry(run)
    run.method.step(FINAL_SPARSITY)
    run.method.apply_masks()
    after = _masks(run.method)
    for fqn, mask in before.items():
        assert torch.equal(after[fqn], mask), f"{name} ({policy}) changed {fqn} after the ramp"


@pytest.mark.parametrize("name", METHODS)
def test_finalize_bakes_masks_and_keeps_state_dict_keys(name, make_tiny_bert, tiny_batch):
    run = _trained(name, make_tiny_bert, tiny_batch)
    masks = _masks(run.method)
    final = run.method.finalize()
    assert isinstance(final, nn.Module)
    final.eval()
    with torch.no_grad():
        inputs = {k: v for k, v in tiny_batch.items() if k != "labels"}
        logits = final(**inputs).logits
    assert logits.shape == (tiny_batch["input_ids"].shape[0], run.model.config.num_labels)
    assert torch.isfinite(logits).all()
    if run.cls.structured:
        return  # a physically smaller model: its keys may differ, its forward must work
    assert list(final.state_dict()) == run.keys_before
    weights = final.state_dict()
    for fqn, mask in masks.items():
        assert not weights[fqn].cpu()[~mask].any(), f"{fqn}: pruned entries not baked to zero"


@pytest.mark.parametrize("policy", MASK_POLICIES)
@pytest.mark.parametrize("name", METHODS)
def test_state_dict_round_trip(name, policy, make_tiny_bert, tiny_batch):
    run = _trained(name, make_tiny_bert, tiny_batch, policy=policy)
    state = copy.deepcopy(run.method.state_dict())
    # A resumed trial: the checkpointed weights, a fresh method instance, prepare, load.
    model = copy.deepcopy(run.model)
    context = copy.copy(run.context)
    context.resuming = True  # as the trial sets it: one-off stages (RPP's mlm, one-shot passes) are skipped
    restored = run.cls(mask_policy=policy)
    restored.prepare(model, run.targets, context)
    restored.load_state_dict(state)
    assert restored.diagnostics() == run.method.diagnostics()
    for fqn in run.method.masks:
        stored, got = run.method.pruned_values(fqn), restored.pruned_values(fqn)
        assert (stored is None) == (got is None), f"{fqn}: stored pruned values not restored"
        if stored is not None:
            assert torch.equal(got, stored), f"{fqn}: stored pruned values differ after restore"
    expected = _masks(run.method)
    got = _masks(restored)
    assert got.keys() == expected.keys()
    for fqn in expected:
        assert torch.equal(got[fqn], expected[fqn]), f"{fqn}: mask differs after load_state_dict"
    # The next masking step (pruning further) decides the same from the restored statistics.
    run.method.step(NEXT_SPARSITY)
    restored.step(NEXT_SPARSITY)
    restored_masks = _masks(restored)
    for fqn, mask in _masks(run.method).items():
        assert torch.equal(restored_masks[fqn], mask), f"{fqn}: next step differs after restore"


@pytest.mark.parametrize("name", METHODS)
def test_same_seed_gives_identical_masks(name, make_tiny_bert, tiny_batch):
    first = _masks(_trained(name, make_tiny_bert, tiny_batch, seed=3).method)
    second = _masks(_trained(name, make_tiny_bert, tiny_batch, seed=3).method)
    assert first.keys() == second.keys()
    for fqn in first:
        assert torch.equal(first[fqn], second[fqn]), fqn
