"""Soft movement pruning: the penalty on sigmoid(S), its ramp, the threshold capped by the target
sparsity, and checkpoint round trips."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from rayprune.methods import SparsitySchedule, TrainingContext, get_method
from rayprune.methods.soft_movement import SoftMovementMethod
from rayprune.training.loop import method_step_hooks


def hooks(method, model, context, step, extra_backward=None):
    """The trial's hooks of one step (``method_step_hooks``) on the gradients already in
    ``.grad``, without a weight update."""
    method_step_hooks(method, model, step=step, total=context.total_steps, schedule=context.schedule,
                      optimizer_step=lambda finite: None, extra_backward=extra_backward)


def train_step(method, model, context, step, grads):
    """One trial step with hand-set task gradients (no weight update): extra_loss, then the
    loop's hooks with the extra loss's backward."""
    context.step = step
    extra = method.extra_loss(None, {}, None)
    for param, grad in zip(model.parameters(), grads):
        param.grad = torch.as_tensor(grad, dtype=torch.float32).reshape(param.shape).clone()
    hooks(method, model, context, step, None if extra is None else extra.backward)
    return extra


def context_for(total_steps, **schedule):
    return TrainingContext(
        total_steps=total_steps,
        schedule=SparsitySchedule(**{"final_sparsity": 0.5, "start": 0.0, "end": 1.0, **schedule}),
    )


def zero_model(shape=(4, 4)):
    model = nn.Sequential(nn.Linear(shape[1], shape[0], bias=False))
    nn.init.constant_(model[0].weight, 1.0)
    return model


def test_registry_defaults():
    cls = get_method("soft_movement")
    assert cls is SoftMovementMethod
    assert cls.schedule_defaults == {"kind": "cubic", "interval": 1}
    options = cls().options
    assert (options.final_lambda, options.final_threshold) == (400.0, 0.1)
    assert (options.score_learning_rate, options.mask_init) == (1e-2, 0.0)
    assert options.selection == "global"
    assert options.fill_to_target is True


def test_penalty_value_and_cubic_ramp_match_hand_numbers():
    model = zero_model()
    context = context_for(11)  # ramp = steps 0..10, x = step / 10
    method = SoftMovementMethod()
    method.prepare(model, ["0.weight"], context)
    context.step = 0
    assert method.extra_loss(None, {}, None) is None  # lambda(0) = 0
    context.step = 1
    # ramp = 1 - (1 - 0.1)^3 = 0.271: lambda = 108.4, tau = 0.0271; sigmoid(0) = 0.5.
    assert method.penalty_weight() == pytest.approx(108.4)
    assert method.threshold() == pytest.approx(0.0271)
    assert method.extra_loss(None, {}, None).item() == pytest.approx(54.2)
    context.step = 10
    assert method.penalty_weight() == pytest.approx(400.0)
    assert method.threshold() == pytest.approx(0.1)


def test_penalty_drives_scores_down_every_step_without_task_gradient():
    model = zero_model()
    context = context_for(12)
    method = SoftMovementMethod()
    method.prepare(model, ["0.weight"], context)
    zero = torch.zeros(4, 4)
    train_step(method, model, context, 0, [zero])  # lambda(0) = 0: nothing moves yet
    previous = method.score("0.weight", None).clone()
    assert torch.equal(previous, torch.zeros(4, 4))
    for step in range(1, 12):
        train_step(method, model, context, step, [zero])
        current = method.score("0.weight", None).clone()
        assert (current < previous).all(), f"scores did not decrease at step {step}"
        previous = current


def test_penalty_gradient_reaches_scores_but_not_task_statistics():
    model = zero_model((1, 2))
    context = context_for(11)
    method = SoftMovementMethod()
    method.prepare(model, ["0.weight"], context)
    context.step = 1
    extra = method.extra_loss(None, {}, None)
    model[0].weight.grad = torch.tensor([[-2.0, 0.0]])
    seen = {}

    def extra_backward():  # the score gradient as the trial's step has it before and after
        seen["task"] = method._scores_flat.grad.clone()
        extra.backward()
        seen["both"] = method._scores_flat.grad.clone()

    hooks(method, model, context, 1, extra_backward)
    task_part = seen["task"]
    assert task_part.tolist() == [-2.0, 0.0]  # g * W only
    # d/dS of lambda * mean(sigmoid(S)) at S = 0: 108.4 * 0.25 / 2 per entry.
    penalty = 108.4 * 0.25 / 2
    assert torch.allclose(seen["both"], torch.tensor([-2.0 + penalty, penalty]))


def test_threshold_schedule_reaches_the_target_and_never_overshoots():
    total = 60
    model = zero_model()
    context = context_for(total, end=0.8)
    method = SoftMovementMethod(score_learning_rate=0.1, fill_to_target=False)
    method.prepare(model, ["0.weight"], context)
    # Row-major entries 0..7 move away from zero (g*W = -10 outweighs the penalty's <= 6.25);
    # entries 8..15 get no task gradient, so only the penalty acts on them.
    grad = torch.cat([torch.full((8,), -10.0), torch.zeros(8)]).reshape(4, 4)
    below_target_seen = False
    for step in range(total):
        train_step(method, model, context, step, [grad])
        zeros = int((model[0].weight == 0).sum())
        requested = round(context.schedule.sparsity_at(step, total) * 16)
        assert zeros <= requested  # the target caps the threshold
        below_target_seen |= zeros < requested
    assert below_target_seen  # early on, sigmoid(S) is still above tau: sparsity lags
    assert int((model[0].weight == 0).sum()) == 8  # 0.5 * 16, the target
    assert method.masks["0.weight"].reshape(-1).tolist() == [True] * 8 + [False] * 8
    # Every pruned entry is below tau_final = 0.1; every kept one above.
    sigmoid = torch.sigmoid(method.score("0.weight", None)).reshape(-1)
    assert (sigmoid[8:] <= 0.1).all() and (sigmoid[:8] > 0.1).all()
    assert method.filled_above_threshold == 0


def test_without_fill_sparsity_stays_below_target_when_scores_stay_above_threshold():
    model = zero_model()
    context = context_for(10)
    # No penalty: sigmoid(S) stays at 0.5 > tau, so the threshold never prunes.
    method = SoftMovementMethod(final_lambda=0.0, fill_to_target=False)
    method.prepare(model, ["0.weight"], context)
    for step in range(10):
        train_step(method, model, context, step, [torch.zeros(4, 4)])
    assert int((model[0].weight == 0).sum()) == 0
    assert method.step(0.5) == {"0.weight": 0.0}  # measured, not the target


def test_fill_to_target_prunes_the_gap_by_lowest_score_at_the_last_step():
    model = zero_model((1, 4))
    context = context_for(6)  # ramp = steps 0..5
    method = SoftMovementMethod(final_lambda=0.0)  # fill_to_target=True by default
    method.prepare(model, ["0.weight"], context)
    grad = [[1.0, -1.0, 2.0, -2.0]]  # g*W: entries 0 and 2 move towards zero, lose score
    for step in range(5):
        train_step(method, model, context, step, [grad])
        assert int((model[0].weight == 0).sum()) == 0  # all sigmoid(S) > tau until the end
    train_step(method, model, context, 5, [grad])
    assert method.masks["0.weight"].tolist() == [[False, True, False, True]]
    assert method.filled_above_threshold == 2
    # 2 of 4, reported to Tune; with the base's reselection numbers (the fill pruned 2 of 4)
    # and movement's weight shares (checked in test_movement.py).
    numbers = method.diagnostics()
    assert {k: numbers[k] for k in ("filled_above_threshold", "mask_changed_last", "returned")} == {
        "filled_above_threshold": 0.5, "mask_changed_last": 0.5, "returned": 0.0,
    }


def test_layer_selection_caps_each_matrix_separately():
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False))
    nn.init.constant_(model[0].weight, 1.0)
    nn.init.constant_(model[1].weight, 1.0)
    context = context_for(5)
    context.step = 4  # end of the ramp: tau = 0.1, logit(tau) = -2.197
    logit = math.log(0.1 / 0.9)
    for selection, kept0, kept1 in [
        ("layer", [[False, False], [True, True]], [[True, True]]),
        ("global", [[False, False], [False, True]], [[True, True]]),
    ]:
        method = SoftMovementMethod(selection=selection, fill_to_target=False)
        method.prepare(copy.deepcopy(model), ["0.weight", "1.weight"], context)
        with torch.no_grad():
            # Three entries of the first matrix are below tau, none of the second.
            method.scores["0.weight"].copy_(torch.tensor([[-5.0, -4.0], [-3.0, 1.0]]))
            method.scores["1.weight"].copy_(torch.tensor([[logit + 0.01, 2.0]]))
        method.step(0.5)
        assert method.masks["0.weight"].tolist() == kept0, selection
        assert method.masks["1.weight"].tolist() == kept1, selection


def test_state_dict_round_trip_restores_identical_next_step():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 4, bias=False))
    targets = ["0.weight"]
    context = context_for(10, final_sparsity=0.6)
    method = SoftMovementMethod(score_learning_rate=0.3)
    method.prepare(model, targets, context)
    grads = [torch.randn(4, 5) for _ in range(6)]
    for step in range(4):
        train_step(method, model, context, step, [grads[step]])
    state = method.state_dict()
    model_copy = copy.deepcopy(model)
    train_step(method, model, context, 4, [grads[4]])  # must not leak into `state`

    restored = SoftMovementMethod(score_learning_rate=0.3)
    restored.prepare(model_copy, targets, context_for(10, final_sparsity=0.6))
    restored.load_state_dict(state)
    train_step(restored, model_copy, restored.context, 4, [grads[4]])
    assert torch.equal(restored.score("0.weight", None), method.score("0.weight", None))
    assert torch.equal(restored.masks["0.weight"], method.masks["0.weight"])
    assert torch.equal(model[0].weight, model_copy[0].weight)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"final_threshold": 0.0}, ValueError),
        ({"final_threshold": 1.5}, ValueError),
        ({"final_lambda": -1.0}, ValueError),
        ({"final_lambda": None}, TypeError),
        ({"score_learning_rate": -1e-2}, ValueError),
        ({"fill_to_target": "yes"}, TypeError),
    ],
)
def test_bad_options_are_rejected_with_the_option_name(kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        SoftMovementMethod(**kwargs)
