"""Movement pruning: the straight-through score update and its sign, exact per-layer top-k,
persistent masks and checkpoint round trips."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from rayprune.methods import SparsitySchedule, TrainingContext, get_method
from rayprune.methods.movement import MovementMethod
from rayprune.training.loop import method_step_hooks

LR = 1e-2


def linear(values):
    """A bias-free linear with the given weight matrix; target ``0.weight``."""
    values = torch.tensor(values, dtype=torch.float32)
    model = nn.Sequential(nn.Linear(values.shape[1], values.shape[0], bias=False))
    with torch.no_grad():
        model[0].weight.copy_(values)
    return model


def train_step(method, model, context, step, grads):
    """One trial step (``method_step_hooks``, the loop's hook order) with hand-set task
    gradients; the weights are not updated (no weight optimizer), so only the scores and masks
    move."""
    context.step = step
    extra = method.extra_loss(None, {}, None)
    assert extra is None
    for param, grad in zip(model.parameters(), grads):
        param.grad = torch.as_tensor(grad, dtype=torch.float32).reshape(param.shape).clone()
    method_step_hooks(method, model, step=step, total=context.total_steps, schedule=context.schedule,
                      optimizer_step=lambda finite: None)


def context_for(total_steps, **schedule):
    return TrainingContext(
        total_steps=total_steps,
        schedule=SparsitySchedule(**{"final_sparsity": 0.5, "start": 0.0, "end": 1.0, **schedule}),
    )


def test_registry_defaults():
    cls = get_method("movement")
    assert cls is MovementMethod
    assert cls.default_scope == "encoder_linear"
    assert cls.schedule_defaults == {"kind": "cubic", "interval": 1}
    options = cls().options
    assert options.selection == "layer"
    assert (options.score_learning_rate, options.mask_init) == (1e-2, 0.0)


def test_weights_moving_away_from_zero_gain_score():
    # W * g < 0 means gradient descent pushes W away from zero.
    model = linear([[2.0, -2.0, 2.0, -2.0]])
    grad = [[-0.5, 0.5, 0.5, -0.5]]  # dL/dS = g * W = [-1, -1, +1, +1]
    context = context_for(10, interval=100)
    method = MovementMethod()
    method.prepare(model, ["0.weight"], context)
    train_step(method, model, context, 0, [grad])
    # AdamW's first step: m^ = g_S, sqrt(v^) = |g_S|, so S = -lr * g_S / (|g_S| + 1e-8).
    step_size = LR * 1.0 / (1.0 + 1e-8)
    expected = torch.tensor([[step_size, step_size, -step_size, -step_size]])
    assert torch.allclose(method.score("0.weight", None), expected, rtol=1e-6, atol=0)


def test_scores_follow_adamw_on_grad_times_weight():
    torch.manual_seed(0)
    model = linear(torch.randn(3, 4).tolist())
    context = context_for(10, interval=100)  # no masking event inside the 4 steps checked
    method = MovementMethod(score_learning_rate=0.05)
    method.prepare(model, ["0.weight"], context)
    reference = torch.zeros(3, 4, requires_grad=True)
    optimizer = torch.optim.AdamW([reference], lr=0.05, weight_decay=0.0)
    for step in range(4):
        grad = torch.randn(3, 4)
        train_step(method, model, context, step, [grad])
        reference.grad = grad * model[0].weight.detach()
        optimizer.step()
    assert torch.allclose(method.score("0.weight", None), reference.detach(), rtol=1e-6, atol=1e-9)


def test_layer_topk_gives_exact_sparsity_per_matrix():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(5, 2, bias=False))
    targets = ["0.weight", "1.weight"]
    context = context_for(12, final_sparsity=0.7)
    method = MovementMethod()
    method.prepare(model, targets, context)
    grads = [[torch.randn(4, 4), torch.randn(2, 5)] for _ in range(12)]
    for step in range(12):
        train_step(method, model, context, step, grads[step])
        target = context.schedule.sparsity_at(step, 12)
        for fqn, param in zip(targets, model.parameters()):
            if context.schedule.should_update(step, 12):
                assert int((param == 0).sum()) == round(target * param.numel())
    assert int((model[0].weight == 0).sum()) == round(0.7 * 16)  # 11 of 16
    assert int((model[1].weight == 0).sum()) == round(0.7 * 10)  # 7 of 10


def test_topk_prunes_the_lowest_scores_of_each_matrix():
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[1].weight.fill_(1.0)
    context = context_for(4, interval=100)
    method = MovementMethod()
    method.prepare(model, ["0.weight", "1.weight"], context)
    # Movement only: first matrix gets scores [[+, -], [-, +]] (g*W), second [[-, +]].
    train_step(method, model, context, 0, [[[-1.0, 1.0], [2.0, -2.0]], [[3.0, -3.0]]])
    method.step(0.5)
    assert method.masks["0.weight"].tolist() == [[True, False], [False, True]]
    assert method.masks["1.weight"].tolist() == [[False, True]]


@pytest.mark.parametrize(
    "selection, kept0, kept1",
    [
        ("layer", [[False, False], [True, True]], [[False, True]]),  # 2 of 4 and 1 of 2
        ("global", [[False, False], [False, True]], [[True, True]]),  # the 3 lowest of all 6
    ],
)
def test_layer_and_global_selection_on_hand_set_scores(selection, kept0, kept1):
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False))
    nn.init.constant_(model[0].weight, 1.0)
    nn.init.constant_(model[1].weight, 1.0)
    method = MovementMethod(selection=selection)
    method.prepare(model, ["0.weight", "1.weight"], context_for(4))
    with torch.no_grad():
        method.scores["0.weight"].copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        method.scores["1.weight"].copy_(torch.tensor([[5.0, 6.0]]))
    sparsity = method.step(0.5)
    assert method.masks["0.weight"].tolist() == kept0
    assert method.masks["1.weight"].tolist() == kept1
    # step() reports the measured sparsity of the weights.
    assert sparsity == {
        "0.weight": 1 - sum(map(sum, kept0)) / 4,
        "1.weight": 1 - sum(map(sum, kept1)) / 2,
    }


def test_masks_persist_even_if_a_pruned_score_recovers():
    model = linear([[1.0, 1.0, 1.0, 1.0]])
    context = context_for(6, interval=100)
    method = MovementMethod(mask_policy="persistent")
    method.prepare(model, ["0.weight"], context)
    train_step(method, model, context, 0, [[-1.0, -1.0, 1.0, 1.0]])
    method.step(0.5)
    method.apply_masks()
    assert method.masks["0.weight"].tolist() == [[True, True, False, False]]
    with torch.no_grad():
        method.scores["0.weight"][0, 2] = 100.0  # a pruned entry now scores highest
    method.step(0.5)
    assert method.masks["0.weight"].tolist() == [[True, True, False, False]]
    assert model[0].weight[0, 2:].tolist() == [0.0, 0.0]


def test_reselect_brings_a_recovered_score_back_with_its_trained_weight():
    model = linear([[1.0, 2.0, 3.0, 4.0]])
    context = context_for(6, interval=100)
    method = MovementMethod()  # the default policy: reselect (official TopK every step)
    method.prepare(model, ["0.weight"], context)
    train_step(method, model, context, 0, [[-1.0, -1.0, 1.0, 1.0]])
    weights = model[0].weight.detach().clone()  # after the optimizer step, before masking
    method.step(0.5)
    method.apply_masks()
    assert method.masks["0.weight"].tolist() == [[True, True, False, False]]
    assert model[0].weight[0, 2:].tolist() == [0.0, 0.0]
    # The pruned entries' trained values are kept for them (the official dense W under W*M).
    assert torch.equal(method.pruned_values("0.weight")[0, 2:], weights[0, 2:])
    # Their scores keep learning from the dense weight: dL/dS = grad * W with W = 3, 4.
    context.step = 1
    model[0].weight.grad = torch.tensor([[0.0, 0.0, -1.0, 0.5]])
    method.after_backward(model)
    assert method._scores_flat.grad.tolist() == pytest.approx([0.0, 0.0, -weights[0, 2].item(), 0.5 * weights[0, 3].item()])
    method.score_optimizer.zero_grad(set_to_none=False)
    with torch.no_grad():
        method.scores["0.weight"][0, 2] = 100.0  # a pruned entry now scores highest
    method.step(0.5)
    method.apply_masks()
    keep = method.masks["0.weight"].tolist()[0]
    assert keep[2] and keep.count(True) == 2
    # It resumes from its trained value, not from 0.
    assert model[0].weight[0, 2].item() == weights[0, 2].item() != 0.0


def test_scores_stop_after_the_ramp():
    model = linear([[1.0, 1.0]])
    context = context_for(10, end=0.5)  # ramp = steps 0..4
    method = MovementMethod()
    method.prepare(model, ["0.weight"], context)
    for step in range(5):
        train_step(method, model, context, step, [[-1.0, 1.0]])
    frozen = method.score("0.weight", None).clone()
    train_step(method, model, context, 5, [[-1.0, 1.0]])
    assert torch.equal(method.score("0.weight", None), frozen)


def test_state_dict_round_trip_restores_identical_next_step():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(5, 4, bias=False), nn.Linear(4, 3, bias=False))
    targets = ["0.weight", "1.weight"]
    context = context_for(10, final_sparsity=0.6)
    method = MovementMethod()
    method.prepare(model, targets, context)
    grads = [[torch.randn(4, 5), torch.randn(3, 4)] for _ in range(6)]
    for step in range(4):
        train_step(method, model, context, step, grads[step])
    state = method.state_dict()
    model_copy = copy.deepcopy(model)
    train_step(method, model, context, 4, grads[4])  # must not leak into `state`

    restored = MovementMethod()
    restored.prepare(model_copy, targets, context_for(10, final_sparsity=0.6))
    restored.load_state_dict(state)
    train_step(restored, model_copy, restored.context, 4, grads[4])
    for fqn in targets:
        # Bit-identical only if AdamW's moments and step count were restored too.
        assert torch.equal(restored.score(fqn, None), method.score(fqn, None))
        assert torch.equal(restored.masks[fqn], method.masks[fqn])
    assert torch.equal(model[0].weight, model_copy[0].weight)
    assert torch.equal(model[1].weight, model_copy[1].weight)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"score_learning_rate": 0.0}, ValueError),
        ({"score_learning_rate": "fast"}, TypeError),
        ({"mask_init": float("nan")}, ValueError),
        ({"selection": "row"}, ValueError),
        ({"final_lambda": 400.0}, ValueError),  # a soft movement option
    ],
)
def test_bad_options_are_rejected_with_the_option_name(kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        MovementMethod(**kwargs)


def test_kept_weight_share_compares_the_mask_with_magnitudes_choice():
    model = linear([[1.0, 2.0, 3.0, 4.0]])
    context = context_for(6, interval=100)
    method = MovementMethod()
    method.prepare(model, ["0.weight"], context)
    train_step(method, model, context, 0, [[-1.0, -1.0, 1.0, 1.0]])
    method.step(0.5)
    method.apply_masks()
    # Kept: the weights 1 and 2 of a mass of 10; magnitude would keep 3 and 4.
    numbers = method.diagnostics()
    assert numbers["kept_weight_share"] == pytest.approx(0.3)
    assert numbers["kept_weight_share_max"] == pytest.approx(0.7)
    assert "kept_weight_share" not in MovementMethod(mask_policy="persistent").diagnostics()
