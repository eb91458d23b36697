"""SEVEN_dyn: hand-checked statistics on tiny weights, the noisy-gradient ranking, the exact
incremental selection and checkpoint round trips."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from rayprune.methods import SparsitySchedule, TrainingContext, get_method
from rayprune.methods import masks as mask_ops
from rayprune.methods.masks import lowest_kept_indices, select_new_pruned
from rayprune.methods.seven import SevenMethod
from rayprune.training.loop import method_step_hooks

A1, A2 = 0.8, 0.9


def one_row(values):
    """A bias-free linear whose single weight row is ``values``; target ``0.weight``."""
    model = nn.Sequential(nn.Linear(len(values), 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([values]))
    return model


def hooks(method, model, context, step):
    """The trial's hooks of one step (``method_step_hooks``) on the gradients already in
    ``.grad``, without a weight update."""
    method_step_hooks(method, model, step=step, total=context.total_steps, schedule=context.schedule,
                      optimizer_step=lambda finite: None)


def train_step(method, model, context, step, grad_rows):
    """One trial step with hand-set task gradients (no weight update)."""
    context.step = step
    extra = method.extra_loss(None, {}, None)
    assert extra is None
    for param, row in zip(model.parameters(), grad_rows):
        param.grad = torch.tensor(row, dtype=torch.float32).reshape(param.shape)
    hooks(method, model, context, step)


def window(total_steps, **schedule):
    return TrainingContext(
        total_steps=total_steps,
        schedule=SparsitySchedule(**{"final_sparsity": 0.5, "start": 0.0, "end": 1.0, **schedule}),
    )


def test_registry_defaults():
    cls = get_method("seven")
    assert cls is SevenMethod
    assert cls.default_scope == "all_linear"  # SEVEN prunes the pooler too (SPEC §1)
    assert cls.schedule_defaults == {"kind": "cubic", "interval": 1}
    options = cls().options
    assert (options.alpha1, options.alpha2, options.selection) == (0.8, 0.9, "global")


def test_bias_corrected_statistics_match_hand_numbers_at_k0_and_k1():
    model = one_row([2.0, -1.0])
    context = window(10, interval=100)  # window = the whole run; no masking step in between
    method = SevenMethod()
    method.prepare(model, ["0.weight"], context)

    train_step(method, model, context, 0, [[2.0, 0.5]])
    # k=0: m = 0.2|g|, v = 0.1 g^2; m^ = |g|, v^ = g^2, so the ratio is 1 (up to 1e-9).
    state = method.state_dict()
    assert torch.allclose(state["m"]["0.weight"], torch.tensor([[0.4, 0.1]]))
    assert torch.allclose(state["v"]["0.weight"], torch.tensor([[0.4, 0.025]]))
    # I = |W g| = [2*2, 1*0.5]
    assert torch.allclose(method.score("0.weight", None), torch.tensor([[4.0, 0.5]]))

    train_step(method, model, context, 1, [[-4.0, 0.5]])
    # k=1, first entry: m = 0.8*0.4 + 0.2*4 = 1.12, v = 0.9*0.4 + 0.1*16 = 1.96,
    # m^ = 1.12 / (1 - 0.64) = 3.1111, sqrt(v^) = sqrt(1.96 / 0.19) = 3.21182, ratio 0.968644,
    # I = 4 + 2*4*0.968644 = 11.74915.  Second entry: constant |g| keeps the ratio at 1:
    # I = 0.5 + 1*0.5 = 1.0.
    state = method.state_dict()
    assert torch.allclose(state["m"]["0.weight"], torch.tensor([[1.12, 0.18]]))
    assert torch.allclose(state["v"]["0.weight"], torch.tensor([[1.96, 0.0475]]))
    assert torch.allclose(
        method.score("0.weight", None), torch.tensor([[11.74915, 1.0]]), rtol=1e-5
    )
    assert state["updates"] == 2


def test_statistics_start_at_the_window_and_count_k_from_there():
    model = one_row([1.0, 1.0])
    context = window(10, start=0.3, interval=100)  # window = steps 3..9
    method = SevenMethod()
    method.prepare(model, ["0.weight"], context)
    for step in range(3):
        train_step(method, model, context, step, [[5.0, 5.0]])
    assert method.updates == 0
    assert torch.count_nonzero(method.score("0.weight", None)) == 0
    train_step(method, model, context, 3, [[2.0, 0.5]])
    # First update of the window is k=0: m^ = |g| exactly, whatever came before.
    m = method.state_dict()["m"]["0.weight"]
    assert torch.allclose(m / (1 - A1), torch.tensor([[2.0, 0.5]]))
    assert torch.allclose(method.score("0.weight", None), torch.tensor([[2.0, 0.5]]))


def test_noisier_gradient_ranks_lower_at_equal_mean_and_gets_pruned():
    # Same |W|, same mean |g| = 1 over four steps: plain sum |W g| ties at 4.0.
    steady, noisy = [1.0, 1.0, 1.0, 1.0], [0.2, 1.8, 0.2, 1.8]
    model = one_row([1.0, -1.0])
    context = window(4, interval=100)  # masks update at steps 0 (s=0) and 3 (s=0.5)
    method = SevenMethod()
    method.prepare(model, ["0.weight"], context)
    for step in range(3):
        train_step(method, model, context, step, [[steady[step], noisy[step]]])
    importance = method.score("0.weight", None)[0]
    assert importance[0] > importance[1]
    # Hand numbers after three steps: steady 3.0; noisy 0.2 + 1.8*0.8293 + 0.2*0.6903 = 1.831.
    assert importance[0].item() == pytest.approx(3.0, rel=1e-6)
    assert importance[1].item() == pytest.approx(1.831, rel=1e-3)

    train_step(method, model, context, 3, [[steady[3], noisy[3]]])
    weight = model[0].weight[0]
    assert weight[0].item() == 1.0 and weight[1].item() == 0.0  # the noisy one is pruned
    assert method.masks["0.weight"].tolist() == [[True, False]]


def test_pruned_entries_keep_zero_importance():
    model = one_row([1.0, 2.0, 3.0, 4.0])
    context = window(6, interval=100)  # masks at step 0 (s=0) and step 5 (s=0.5)
    method = SevenMethod()
    method.prepare(model, ["0.weight"], context)
    for step in range(5):
        train_step(method, model, context, step, [[1.0, 1.0, 1.0, 1.0]])
    method.step(0.5)  # |W| ranks the two smallest lowest: entries 0 and 1
    method.apply_masks()
    importance = method.score("0.weight", None)
    assert importance[0, :2].tolist() == [0.0, 0.0]
    assert (importance[0, 2:] > 0).all()
    # Gradients keep arriving for the pruned entries; their importance must stay zero.
    train_step(method, model, context, 5, [[9.0, 9.0, 1.0, 1.0]])
    importance = method.score("0.weight", None)
    assert importance[0, :2].tolist() == [0.0, 0.0]
    assert method.masks["0.weight"].tolist() == [[False, False, True, True]]


def test_schedule_reaches_exact_global_sparsity_on_two_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6, bias=False), nn.Linear(6, 3, bias=False))
    targets = ["0.weight", "1.weight"]
    context = window(20, final_sparsity=0.6)
    method = SevenMethod()
    method.prepare(model, targets, context)
    for step in range(20):
        context.step = step
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        hooks(method, model, context, step)
    zeros, total = mask_ops.count_zeros({t: dict(model.named_parameters())[t] for t in targets})
    assert zeros == round(0.6 * 66)


def test_state_dict_round_trip_restores_identical_next_step():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 4, bias=False))
    context = window(10, final_sparsity=0.5)
    method = SevenMethod()
    method.prepare(model, ["0.weight"], context)
    grads = [torch.randn(4, 5).tolist() for _ in range(6)]
    for step in range(4):
        train_step(method, model, context, step, [grads[step]])
    state = method.state_dict()
    model_copy = copy.deepcopy(model)
    train_step(method, model, context, 4, [grads[4]])  # must not leak into `state`

    restored_context = window(10, final_sparsity=0.5)
    restored = SevenMethod()
    restored.prepare(model_copy, ["0.weight"], restored_context)
    restored.load_state_dict(state)
    train_step(restored, model_copy, restored_context, 4, [grads[4]])
    assert restored.updates == method.updates
    assert torch.equal(restored.score("0.weight", None), method.score("0.weight", None))
    assert torch.equal(restored.masks["0.weight"], method.masks["0.weight"])
    after, restored_after = method.state_dict(), restored.state_dict()
    for key in ("m", "v"):
        assert torch.equal(after[key]["0.weight"], restored_after[key]["0.weight"])
    assert torch.equal(model[0].weight, model_copy[0].weight)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"alpha1": 1.0}, ValueError),
        ({"alpha2": -0.1}, ValueError),
        ({"alpha1": "0.8"}, TypeError),
        ({"selection": "row"}, ValueError),
        ({"beta": 0.5}, ValueError),
    ],
)
def test_bad_options_are_rejected_with_the_option_name(kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        SevenMethod(**kwargs)


# ------------------------------------------------------------------ incremental selection
def reference_keep(score, keep, sparsity, sizes=None):
    """What PruningMethod.step computes: previous mask forced lowest, exact lowest-k."""
    forced = score.masked_fill(~keep, float("-inf"))
    if sizes is None:
        new = mask_ops.select_lowest_k_global({"all": forced}, sparsity)["all"]
    else:
        chunks = dict(enumerate(forced.split(sizes)))
        new = torch.cat(list(mask_ops.select_lowest_k_per_tensor(chunks, sparsity).values()))
    return keep & new


@pytest.mark.parametrize("sizes", [None, [150_000, 70_000, 3_000]])
@pytest.mark.parametrize("start, sparsity", [(0.0, 0.001), (0.5, 0.51), (0.3, 0.9), (0.0, 0.0)])
def test_select_new_pruned_equals_the_full_lowest_k(sizes, start, sparsity):
    generator = torch.Generator().manual_seed(0)
    score = torch.rand(223_000, generator=generator)  # distinct values: the answer is unique
    keep = torch.rand(223_000, generator=generator) >= start
    before = keep.clone()
    expected = reference_keep(score, keep, sparsity, sizes)
    idx = select_new_pruned(score, keep, sparsity, sizes=sizes, generator=torch.Generator())
    assert torch.equal(keep, before)  # the caller's mask is not modified
    assert keep[idx].all() and idx.unique().numel() == idx.numel()
    got = keep.clone()
    got[idx] = False
    assert torch.equal(got, expected)


def test_select_new_pruned_with_ceiling_prunes_only_below_it():
    score = torch.tensor([0.1, 0.5, 0.2, 0.9, 0.3, 0.7])
    keep = torch.ones(6, dtype=torch.bool)
    # Request 4 of 6, but only 0.1, 0.2, 0.3 are <= 0.35: three are pruned.
    assert sorted(select_new_pruned(score, keep, 4 / 6, ceiling=0.35).tolist()) == [0, 2, 4]
    # The request caps it: at most round(0.34 * 6) = 2, the two lowest.
    assert sorted(select_new_pruned(score, keep, 0.34, ceiling=0.35).tolist()) == [0, 2]
    # Already-pruned entries count towards the request.
    keep[0] = False
    assert sorted(select_new_pruned(score, keep, 0.34, ceiling=0.35).tolist()) == [2]


def test_lowest_kept_indices_never_returns_pruned_entries():
    score = torch.arange(100_000, dtype=torch.float32)
    keep = torch.ones(100_000, dtype=torch.bool)
    keep[:500] = False  # the globally lowest are already pruned
    idx = lowest_kept_indices(score, keep, 10, generator=torch.Generator().manual_seed(3))
    assert sorted(idx.tolist()) == list(range(500, 510))
