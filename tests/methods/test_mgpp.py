"""MGPP: the mixture-prior gradient, its annealing and its place in the step (SPEC §2)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from rayprune.methods import get_method
from rayprune.methods.base import TrainingContext
from rayprune.methods.mgpp import (
    MGPPMethod,
    MGPPOptions,
    mixture_prior_grad,
    prior_lambda,
    prior_threshold,
)
from rayprune.methods.schedules import SparsitySchedule


def _hand_prior_grad(w: float, v0: float, v1: float, lam: float) -> float:
    """SPEC §2.2 written out with the math module."""
    c1 = math.log(lam) - math.log(1 - lam) + 0.5 * math.log(v0) - 0.5 * math.log(v1)
    c2 = 1 / (2 * v0) - 1 / (2 * v1)
    q = 1 / (1 + math.exp(c2 * w * w + c1))
    return w * (q / v0 + (1 - q) / v1)


class _OneLinear(nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.lin = nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=weight.dtype)
        with torch.no_grad():
            self.lin.weight.copy_(weight)


def _prepared(weight, *, total_steps=100, step=0, n=1000, schedule=None, **options):
    model = _OneLinear(weight)
    ctx = TrainingContext(
        total_steps=total_steps, num_train_examples=n, step=step, schedule=schedule
    )
    method = MGPPMethod(**options)
    method.prepare(model, ["lin.weight"], ctx)
    return model, method, ctx


def test_registry_resolves_mgpp():
    assert get_method("mgpp") is MGPPMethod


def test_prior_grad_matches_closed_form_by_hand():
    v0, v1, lam = 0.01, 1.0, 0.5
    weights = [0.0, 0.1, -0.2, 0.3, 1.5]
    got = mixture_prior_grad(torch.tensor(weights, dtype=torch.float64), v0=v0, v1=v1, lam=lam)
    want = torch.tensor([_hand_prior_grad(w, v0, v1, lam) for w in weights], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    # One value worked on paper: c1 = 0.5*ln(0.01) = -2.302585, c2 = 49.5,
    # q(0.1) = 1/(1 + e^(0.495 - 2.302585)) = 0.85906, grad = 0.1*(85.906 + 0.14094) = 8.6047.
    assert got[1].item() == pytest.approx(8.6047, abs=1e-4)


def test_prior_grad_is_derivative_of_negative_log_mixture():
    # Independent check through autograd on -log(lam N(0,v1) + (1-lam) N(0,v0)).
    v0, v1, lam = 1e-4, 0.05, 0.1
    w = torch.tensor([1e-3, -5e-3, 0.02, 0.3], dtype=torch.float64, requires_grad=True)
    zero = torch.tensor(0.0, dtype=torch.float64)
    slab = torch.distributions.Normal(zero, math.sqrt(v1)).log_prob(w) + math.log(lam)
    spike = torch.distributions.Normal(zero, math.sqrt(v0)).log_prob(w) + math.log(1 - lam)
    (-torch.logaddexp(slab, spike).sum()).backward()
    got = mixture_prior_grad(w.detach(), v0=v0, v1=v1, lam=lam)
    torch.testing.assert_close(got, w.grad, rtol=1e-10, atol=1e-12)


def test_crossing_threshold_matches_spec_worked_numbers():
    # SPEC §2.2 table: SST-2 (v0=1e-9, v1=0.1, lam=0.1) -> 1.5e-4; MNLI end (lam=1e-4) -> 6.2e-5.
    assert prior_threshold(v0=1e-9, v1=0.1, lam=0.1) == pytest.approx(1.5e-4, rel=0.02)
    assert prior_threshold(v0=1e-10, v1=0.05, lam=1e-4) == pytest.approx(6.2e-5, rel=0.02)
    # At the crossing the two weighted components are equal: q = 1/2, so the gradient is
    # w * (1/(2 v0) + 1/(2 v1)).
    v0, v1, lam = 1e-9, 0.1, 0.1
    t = prior_threshold(v0=v0, v1=v1, lam=lam)
    g = mixture_prior_grad(torch.tensor([t], dtype=torch.float64), v0=v0, v1=v1, lam=lam)
    assert g.item() == pytest.approx(t * (0.5 / v0 + 0.5 / v1), rel=1e-9)


@pytest.mark.parametrize("dtype, rel", [(torch.float64, 1e-6), (torch.float32, 1e-3)])
def test_spike_pins_near_zero_weights_and_slab_is_weak_l2(dtype, rel):
    n, v0, v1 = 1000, 1e-9, 0.1
    weight = torch.tensor([[1e-6, -1e-6, 0.05, -0.2]], dtype=dtype)
    model, method, _ = _prepared(weight, n=n, sigma0=v0, sigma1=v1, lambda0=0.1)
    model.lin.weight.grad = torch.full_like(weight, 0.5)
    method.after_backward(model)
    added = model.lin.weight.grad - 0.5  # (1, 4)
    # Near zero: q ~ 1, the coefficient is ~1/(n v0) = 1e6, so a 1e-6 weight gets ~1.0.
    assert added[0, 0].item() == pytest.approx(1e-6 / (n * v0), rel=1e-3)
    assert added[0, 1].item() == pytest.approx(-1e-6 / (n * v0), rel=1e-3)
    # Large weights: q = 0, a plain L2 with coefficient 1/(n v1) = 1e-2.
    # (float32 loses ~1e-4 relative of the 5e-4 increment to the 0.5 already in .grad)
    assert added[0, 2].item() == pytest.approx(0.05 / (n * v1), rel=rel)
    assert added[0, 3].item() == pytest.approx(-0.2 / (n * v1), rel=rel)


def test_prior_grad_is_finite_for_tiny_spike_variance():
    # v0 = 1e-10 (MNLI): c2*w^2 ~ 5e9*w^2 would overflow exp; the sigmoid form must not.
    w = torch.tensor([0.0, 1e-30, -1e-7, 3e-5, 0.1, -10.0, 1e4])
    for dtype in (torch.float32, torch.bfloat16):
        g = mixture_prior_grad(w.to(dtype), v0=1e-10, v1=0.05, lam=0.1)
        assert g.dtype == dtype
        assert torch.isfinite(g).all()
    g = mixture_prior_grad(w, v0=1e-10, v1=0.05, lam=0.1)
    assert g[0].item() == 0.0
    assert g[5].item() == pytest.approx(-10.0 / 0.05, rel=1e-6)


def test_lambda_anneals_linearly_over_the_ramp_and_prior_stops_after_t_e():
    schedule = SparsitySchedule(final_sparsity=0.9, initial_sparsity=0.3, start=0.1, end=0.51)
    total = 100
    assert schedule.steps(total) == (10, 50)  # t_s = 10, t_e = 50
    lam = lambda t: prior_lambda(t, total, schedule, lambda0=0.1, alpha_final=0.001)  # noqa: E731
    assert lam(0) == pytest.approx(0.1)  # before t_s: alpha = 1
    assert lam(10) == pytest.approx(0.1)  # at t_s
    assert lam(30) == pytest.approx(0.1 * (1 - 0.999 * 0.5))  # mid-ramp: 0.05005
    assert lam(50) == pytest.approx(1e-4)  # at t_e: alpha = alpha_final
    assert lam(51) is None and lam(99) is None  # after t_e: no prior


def test_after_backward_uses_annealed_lambda_and_nothing_after_t_e():
    schedule = SparsitySchedule(final_sparsity=0.9, initial_sparsity=0.3, start=0.1, end=0.51)
    weight = torch.tensor([[2e-4, -1e-4, 3e-3, 0.04]])
    model, method, ctx = _prepared(weight, n=500, schedule=schedule)
    ctx.step = 30  # mid-ramp: lambda = 0.05005
    model.lin.weight.grad = torch.zeros_like(weight)
    method.after_backward(model)
    want = mixture_prior_grad(weight, v0=1e-9, v1=0.1, lam=0.05005) / 500
    torch.testing.assert_close(model.lin.weight.grad, want, rtol=1e-5, atol=0)
    # The annealing matters here: lambda0 would give a different gradient at 2e-4.
    assert not torch.allclose(want, mixture_prior_grad(weight, v0=1e-9, v1=0.1, lam=0.1) / 500)

    ctx.step = 51  # after t_e
    model.lin.weight.grad = torch.full_like(weight, 0.25)
    method.after_backward(model)
    assert torch.equal(model.lin.weight.grad, torch.full_like(weight, 0.25))


def test_step_prunes_lowest_magnitudes_globally_and_masks_persist():
    weight = torch.tensor([[0.5, -0.1, 0.3, -0.05], [0.2, 0.4, -0.01, 0.6]])
    model, method, _ = _prepared(weight, mask_policy="persistent")
    sparsities = method.step(0.25)
    assert sparsities["lin.weight"] == pytest.approx(0.25)
    assert torch.equal(method.masks["lin.weight"], weight.abs() > 0.05)
    # A pruned weight does not come back even when it would now score highest.
    with torch.no_grad():
        model.lin.weight[1, 2] = 9.0
    method.step(0.25)
    assert model.lin.weight[1, 2].item() == 0.0


def test_reselect_ranks_every_weight_again_like_the_official_in_place_zeroing():
    weight = torch.tensor([[0.5, -0.1, 0.3, -0.05], [0.2, 0.4, -0.01, 0.6]])
    model, method, _ = _prepared(weight)  # the default policy: reselect (SPEC §2.3)
    assert method.options.mask_policy == "reselect"
    method.step(0.25)  # |w| lowest two: -0.05 and -0.01
    assert torch.equal(method.masks["lin.weight"], weight.abs() > 0.05)
    # The zeroed [1, 2] regrows to 9.0 (as an optimizer step could move it in the official
    # code); at the next event |w| is ranked again: [1, 2] returns and -0.1 goes instead.
    with torch.no_grad():
        model.lin.weight[1, 2] = 9.0
    method.step(0.25)
    assert method.masks["lin.weight"].tolist() == [[True, False, True, False], [True, True, True, True]]
    want = torch.tensor([[0.5, 0.0, 0.3, 0.0], [0.2, 0.4, 9.0, 0.6]])
    assert torch.equal(model.lin.weight.detach(), want)
    assert method.diagnostics() == {"mask_changed_last": 2 / 8, "returned": 1 / 8}
    # A held zero scores lowest, so with nothing regrowing the mask stays (ties keep it).
    method.step(0.25)
    assert method.masks["lin.weight"].tolist() == [[True, False, True, False], [True, True, True, True]]
    assert method.diagnostics()["mask_changed_last"] == 0.0


def test_schedule_defaults_prune_to_initial_sparsity_at_t_s():
    schedule = SparsitySchedule(final_sparsity=0.9, **MGPPMethod.schedule_defaults)
    first, last = schedule.steps(1000)
    assert (first, last) == (80, 999)  # ramp ends at the last step (F = 0)
    assert schedule.should_update(first, 1000)
    assert schedule.sparsity_at(first, 1000) == pytest.approx(0.3)
    assert schedule.sparsity_at(last, 1000) == pytest.approx(0.9)


def test_prepare_needs_training_set_size():
    with pytest.raises(ValueError, match="num_train_examples"):
        _prepared(torch.ones(2, 2), n=0)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"sigma0": 0.1, "sigma1": 0.1}, "sigma0 < sigma1"),
        ({"sigma0": 0.0}, "sigma0"),
        ({"lambda0": 1.0}, "lambda0"),
        ({"alpha_final": 0.0}, "alpha_final"),
    ],
)
def test_invalid_options_raise(options, match):
    with pytest.raises(ValueError, match=match):
        MGPPOptions(**options)
    with pytest.raises(TypeError, match="sigma0"):
        MGPPOptions(sigma0="1e-9")


def test_sigma_options_are_documented_as_variances():
    fields = {f.name: f for f in dataclasses.fields(MGPPOptions)}
    for name in ("sigma0", "sigma1"):
        assert "variance" in fields[name].metadata["help"]
        assert "not a standard deviation" in fields[name].metadata["help"]
    assert "variance" in MGPPOptions.__doc__ and "variance" in MGPPMethod.__doc__


def test_state_dict_round_trip_on_tiny_bert():
    transformers = pytest.importorskip("transformers")
    from rayprune.models import prunable_targets

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, num_labels=2,
    )
    model = transformers.BertForSequenceClassification(config)
    targets = prunable_targets(model)
    ctx = TrainingContext(total_steps=10, num_train_examples=100)
    method = MGPPMethod()
    method.prepare(model, targets, ctx)
    method.step(0.6)
    state = method.state_dict()
    # No statistics beyond the masks (and the reselection counters; MGPP zeroes in place, so
    # it stores no pruned values).
    assert set(state) == {"masks", "reselection"}
    assert state["reselection"]["pruned_values"] == {}

    other = MGPPMethod()
    other.prepare(model, targets, ctx)
    other.load_state_dict(state)
    for fqn in targets:
        assert torch.equal(other.masks[fqn], method.masks[fqn])


def test_after_backward_creates_grad_when_missing():
    weight = torch.tensor([[1e-5, 0.3]])
    model, method, _ = _prepared(weight, n=10)
    assert model.lin.weight.grad is None
    method.after_backward(model)
    want = mixture_prior_grad(weight, v0=1e-9, v1=0.1, lam=0.1) / 10
    torch.testing.assert_close(model.lin.weight.grad, want)
