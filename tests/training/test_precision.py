"""Mixed precision in the trial loop, on the CPU: bf16 autocast and fp16 with a gradient scaler
(both supported by CPU autocast), so the GPU code path is tested without a GPU."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn

from rayprune.methods import register
from rayprune.methods.magnitude import MagnitudeMethod
from rayprune.training import TrialConfig, TrialSettings, run_training
from rayprune.training.loop import method_step_hooks
from rayprune.training.precision import Precision, resolve_precision



@pytest.fixture(scope="module")
def demo_data(demo_data_of):
    return demo_data_of(120, 40)


def settings_for(model_dir: str, precision: str, **changes) -> TrialSettings:
    base = dict(model=model_dir, metric="accuracy", steps=6, batch_size=8, eval_interval=3, threads=1)
    return TrialSettings(**{**base, **changes}, precision=precision)


def _floating_tensors(value, path="state"):
    if torch.is_tensor(value):
        if value.is_floating_point():
            yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _floating_tensors(item, f"{path}.{key}")


# ---------------------------------------------------------------------------- resolution
def test_auto_is_fp32_on_the_cpu_and_explicit_choices_are_kept():
    assert resolve_precision("auto", "cpu") == "fp32"
    for name in ("fp32", "bf16", "fp16"):
        assert resolve_precision(name, "cpu") == name
    with pytest.raises(ValueError, match="training.precision must be one of"):
        resolve_precision("half", "cpu")


# ---------------------------------------------------------------------------- the trial loop
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_loop_trains_in_mixed_precision_with_float32_weights_and_statistics(tiny_dir, demo_data, precision):
    reports = []
    settings = settings_for(tiny_dir, precision)
    config = TrialConfig.from_flat(
        {"method": "movement", "target_sparsity": 0.5, "schedule.start": 0.0, "schedule.end": 1.0,
         "learning_rate": 1e-3}, settings)
    model, method, final = run_training(config, settings, demo_data, report=lambda m, w: reports.append(m))
    assert [r["numeric_precision"] for r in reports] == [precision, precision]
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in reports)
    assert abs(final["sparsity"] - 0.5) < 1e-3
    for name, param in model.named_parameters():
        assert param.dtype == torch.float32, name
    statistics = list(_floating_tensors(method.state_dict()))
    assert statistics, "movement keeps scores; the state dict should hold them"
    for path, tensor in statistics:
        assert tensor.dtype == torch.float32, path
        assert torch.isfinite(tensor).all(), path
    if precision == "fp16":
        # The scaler's first scale (65536) is too large for some steps; those were skipped.
        assert 0 <= reports[-1]["skipped_steps"] < 6
    else:
        assert "skipped_steps" not in reports[-1]


@pytest.mark.parametrize("flat", [
    {"method": "soft_movement", "learning_rate": 1e-3},
    {"method": "grain", "grain.hidden_loss_weight": 1.0},
], ids=["soft_movement", "grain"])
def test_extra_losses_train_under_fp16(tiny_dir, demo_data, flat):
    """Methods with an extra loss (soft movement's penalty on scores outside the optimizer,
    GRAIN's hidden-state loss through float16 activations) take the scaled extra backward."""
    settings = settings_for(tiny_dir, "fp16", steps=4, eval_interval=4, teacher_dir=tiny_dir)
    config = TrialConfig.from_flat({**flat, "target_sparsity": 0.5, "schedule.start": 0.0, "schedule.end": 0.5},
                                   settings)
    model, method, final = run_training(config, settings, demo_data)
    assert final["numeric_precision"] == "fp16" and final["skipped_steps"] < 4
    assert torch.isfinite(torch.tensor(final["train_loss"]))
    assert max(final["sparsity"], final["sparsity_encoder"]) > 0.3
    for name, param in model.named_parameters():
        assert param.dtype == torch.float32 and torch.isfinite(param).all(), name


def test_default_precision_on_the_cpu_is_reported_as_fp32(tiny_dir, demo_data):
    settings = TrialSettings(model=tiny_dir, metric="accuracy", steps=2, batch_size=8, eval_interval=2, threads=1)
    config = TrialConfig.from_flat({"method": "magnitude", "target_sparsity": 0.5}, settings)
    _, _, final = run_training(config, settings, demo_data)
    assert final["numeric_precision"] == "fp32"


GRAD_NORMS: list[float] = []


class GradientNormMethod(MagnitudeMethod):
    """Magnitude pruning that records the norm of the gradients ``after_backward`` sees."""

    def after_backward(self, model):
        GRAD_NORMS.append(float(torch.linalg.vector_norm(
            torch.stack([p.grad.norm() for p in self.params.values() if p.grad is not None]))))


@pytest.fixture
def gradient_norm_method():
    from rayprune import methods

    register("gradnorm")(GradientNormMethod)
    yield "gradnorm"
    methods._REGISTERED.pop("gradnorm", None)


def test_methods_see_unscaled_gradients_under_fp16(tiny_dir, demo_data, gradient_norm_method):
    """The scaler multiplies the loss by 65536 before backward; ``after_backward`` (and the
    clipping before it) must see the true gradients, i.e. about what fp32 gives."""
    norms = {}
    for precision in ("fp32", "fp16"):
        GRAD_NORMS.clear()
        settings = settings_for(tiny_dir, precision, steps=2, eval_interval=2, max_grad_norm=0.0)
        config = TrialConfig.from_flat({"method": gradient_norm_method, "target_sparsity": 0.5}, settings)
        run_training(config, settings, demo_data)
        norms[precision] = list(GRAD_NORMS)
    assert norms["fp16"], "fp16 ran no step whose gradients the method saw"
    assert 0.8 < norms["fp16"][0] / norms["fp32"][0] < 1.25, norms


def test_fp16_resume_restores_the_loss_scale(tiny_dir, demo_data, tmp_path):
    settings = settings_for(tiny_dir, "fp16", steps=6, eval_interval=3, checkpoint_budget=1.0)
    config = TrialConfig.from_flat({"method": "magnitude", "target_sparsity": 0.5, "learning_rate": 1e-3}, settings)
    ckpt = tmp_path / "step3"

    def checkpoint_at_step_3(metrics, writer):
        if metrics["step"] == 3:
            writer(ckpt)

    full_model, _, full = run_training(config, settings, demo_data, report=checkpoint_at_step_3)
    assert (ckpt / "grad_scaler.pt").is_file()
    resumed_model, _, resumed = run_training(config, settings, demo_data, resume_from=ckpt)
    assert resumed["skipped_steps"] == full["skipped_steps"]
    for (name, a), b in zip(full_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name


# ---------------------------------------------------------------------------- the fp16 step
class _TwoLosses(nn.Module):
    """A linear model with a task loss and an extra loss; ``score`` is a leaf outside the
    optimizer that only the extra loss reaches (as movement pruning's scores)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(8, 4)
        self.score = nn.Parameter(torch.randn(4))

    def losses(self, x, scale: float = 1.0):
        out = self.linear(x)
        task = out.pow(2).mean() * scale
        extra = 1e-3 * (out.mean() + torch.sigmoid(self.score).sum())
        return task, extra


def _grads_after(precision: Precision, model: _TwoLosses, optimizer, x, scale: float = 1.0):
    """The trial's step without a method, up to the optimizer step (which is left to the test):
    (finite, the gradients the optimizer step would see)."""
    task, extra = model.losses(x, scale)
    precision.backward(task, retain_graph=True)
    grads = {}

    def before_the_optimizer_step(finite):
        grads.update({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})

    finite = method_step_hooks(None, model, step=0, total=1, schedule=None,
                               optimizer_step=before_the_optimizer_step,
                               extra_backward=functools.partial(precision.backward_extra, extra),
                               finite=precision.unscale(optimizer))
    return finite, grads


def test_fp16_extra_loss_gradients_equal_the_unscaled_ones():
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    plain, scaled = _TwoLosses(), _TwoLosses()
    fp32, fp16 = Precision.create("fp32", "cpu"), Precision.create("fp16", "cpu")
    _, expected = _grads_after(fp32, plain, torch.optim.AdamW(plain.linear.parameters()), x)
    finite, got = _grads_after(fp16, scaled, torch.optim.AdamW(scaled.linear.parameters()), x)
    assert finite
    assert got.keys() == expected.keys() == {"linear.weight", "linear.bias", "score"}
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-6, atol=1e-9)


def test_fp16_overflow_skips_the_step_and_backs_off_the_scale():
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    model = _TwoLosses()
    precision = Precision.create("fp16", "cpu")
    optimizer = torch.optim.AdamW(model.linear.parameters(), lr=0.1)
    before = copy.deepcopy(model.state_dict())
    scale = precision.scaler.get_scale()
    finite, _ = _grads_after(precision, model, optimizer, x, scale=1e36)  # x 65536 overflows float32
    assert not finite
    precision.step(optimizer, finite=finite)
    assert precision.skipped_steps == 1
    assert precision.scaler.get_scale() == scale * precision.scaler.get_backoff_factor()
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), f"{name} changed in a skipped step"
    # The next, finite step goes through.
    optimizer.zero_grad(set_to_none=True)
    finite, _ = _grads_after(precision, model, optimizer, x)
    assert finite
    precision.step(optimizer, finite=finite)
    assert not torch.equal(model.linear.weight, before["linear.weight"])


def test_fp16_refuses_task_gradients_it_cannot_unscale():
    """GradScaler unscales the optimizer's tensors only; a task-loss gradient on any other
    tensor would reach the method 65536 times too large, so it is an error, not silence."""
    model = _TwoLosses()
    precision = Precision.create("fp16", "cpu")
    optimizer = torch.optim.AdamW(model.linear.parameters())
    task = model.linear(torch.randn(4, 8)).mean() + model.score.sum()
    precision.backward(task)
    with pytest.raises(RuntimeError, match="outside the optimizer"):
        precision.unscale(optimizer)
