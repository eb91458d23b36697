"""What a trial reports beyond its metric and what makes it fail: ``retained``, the constraint
measurements, distillation from the reference, and the non-finite / under-pruned guards."""

from __future__ import annotations

import math

import pytest
import torch

from rayprune.methods import PruningMethod, register
from rayprune.training import TrialConfig, TrialSettings, run_training
from rayprune.training.loop import TrialFailed, distillation_loss

from helpers import save_tiny_bert



@pytest.fixture(scope="module")
def demo_data(demo_data_of):
    return demo_data_of(64, 24)


def settings_for(model_dir: str, **changes) -> TrialSettings:
    base = dict(model=model_dir, metric="accuracy", steps=4, batch_size=8, eval_interval=2, threads=1)
    return TrialSettings(**{**base, **changes})


MAGNITUDE = {"method": "magnitude", "target_sparsity": 0.6, "schedule.start": 0.0, "schedule.end": 0.5}


def test_distillation_loss_by_hand():
    student = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    teacher = torch.tensor([[0.0, 1.0], [0.0, 2.0]])
    t = 2.0
    # row 2 agrees (KL 0); row 1: p = softmax([0, .5]), q = softmax([.5, 0]); KL(p || q) * T^2 / batch
    p = torch.softmax(teacher[0] / t, -1)
    q = torch.softmax(student[0] / t, -1)
    expected = float((p * (p.log() - q.log())).sum()) * t ** 2 / 2
    assert float(distillation_loss(student, teacher, t)) == pytest.approx(expected)
    assert float(distillation_loss(teacher, teacher, t)) == pytest.approx(0.0, abs=1e-7)
    regression = distillation_loss(torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0], [3.0]]), t, is_regression=True)
    assert float(regression) == pytest.approx(0.5)


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_distillation_changes_training_of_a_default_loss_method(tiny_dir, demo_data, tmp_path):
    teacher = str(save_tiny_bert(tmp_path / "teacher", seed=5))
    settings = settings_for(tiny_dir, teacher_dir=teacher)
    plain, _, _ = run_training(TrialConfig.from_flat(MAGNITUDE, settings), settings, demo_data)
    distilled, _, _ = run_training(
        TrialConfig.from_flat({**MAGNITUDE, "distill.alpha": 0.5, "distill.temperature": 2.0}, settings),
        settings, demo_data)
    a, b = _weights(plain), _weights(distilled)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="teacher"):  # distilling needs the reference
        run_training(TrialConfig.from_flat({**MAGNITUDE, "distill.alpha": 0.5}, settings_for(tiny_dir)),
                     settings_for(tiny_dir), demo_data)
    with pytest.raises(ValueError, match="distill.alpha"):
        run_training(TrialConfig.from_flat({**MAGNITUDE, "distill.alpha": 1.5}, settings), settings, demo_data)


class OwnLossMethod(PruningMethod):
    """Defines its own task loss (the labels' loss, as the default would): distill.* leaves it alone."""

    description = "test-only: its own task loss"

    def score(self, fqn, weight):
        return weight.abs()

    def task_loss(self, outputs, batch, teacher_outputs):
        return outputs.loss


class NeverPrunes(PruningMethod):
    """Ignores its schedule: the measured sparsity stays 0 whatever the target."""

    description = "test-only: never prunes"

    def score(self, fqn, weight):
        return weight.abs()

    def step(self, sparsity):
        return None


@pytest.fixture
def test_methods():
    from rayprune import methods

    register("own_loss")(OwnLossMethod)
    register("never_prunes")(NeverPrunes)
    yield
    methods._REGISTERED.pop("own_loss", None)
    methods._REGISTERED.pop("never_prunes", None)


def test_a_method_with_its_own_task_loss_is_not_distilled(tiny_dir, demo_data, test_methods, tmp_path):
    teacher = str(save_tiny_bert(tmp_path / "teacher", seed=5))
    settings = settings_for(tiny_dir, teacher_dir=teacher)
    flat = {**MAGNITUDE, "method": "own_loss"}
    plain, _, _ = run_training(TrialConfig.from_flat(flat, settings), settings, demo_data)
    distilled, _, _ = run_training(TrialConfig.from_flat({**flat, "distill.alpha": 0.9}, settings), settings, demo_data)
    a, b = _weights(plain), _weights(distilled)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_retained_and_constraint_measurements_are_reported(tiny_dir, demo_data):
    settings = settings_for(tiny_dir, reference_metric=0.8,
                            constraints={"max_parameters": 10, "max_latency_ms": 1000.0, "min_retained": None})
    reports = []
    model, _, last = run_training(TrialConfig.from_flat(MAGNITUDE, settings), settings, demo_data,
                                  report=lambda m, w: reports.append(m))
    assert all(r["retained"] == pytest.approx(r["accuracy"] / 0.8) for r in reports)
    assert "parameters" not in reports[0] and "latency_ms" not in reports[0]  # measured at the end only
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    assert last["parameters"] == nonzero
    assert 0 < last["latency_ms"] < 1000
    assert model.training  # latency measured in eval mode, training mode restored


def test_a_diverging_trial_fails_at_once(tiny_dir, demo_data):
    settings = settings_for(tiny_dir, steps=20, eval_interval=10)
    reports = []
    with pytest.raises(TrialFailed, match="non-finite"):
        run_training(TrialConfig.from_flat({**MAGNITUDE, "learning_rate": 1e30}, settings), settings, demo_data,
                     report=lambda m, w: reports.append(m))
    assert reports == []  # stopped before its first evaluation


def test_a_trial_far_below_its_target_sparsity_fails(tiny_dir, demo_data, test_methods):
    settings = settings_for(tiny_dir)
    reports = []
    with pytest.raises(TrialFailed, match="far below the target 0.600"):
        run_training(TrialConfig.from_flat({**MAGNITUDE, "method": "never_prunes"}, settings), settings, demo_data,
                     report=lambda m, w: reports.append(m))
    assert [r["step"] for r in reports] == [2]  # the last evaluation is not reported
    assert not math.isnan(reports[0]["accuracy"])


def test_a_structured_trial_counts_the_parameters_its_export_stores(tiny_dir, demo_data):
    settings = settings_for(tiny_dir, teacher_dir=tiny_dir, constraints={"max_parameters": 10, "max_latency_ms": 1e3})
    flat = {"method": "grain", "target_sparsity": 0.5, "schedule.start": 0.0, "schedule.end": 0.5}
    model, method, last = run_training(TrialConfig.from_flat(flat, settings), settings, demo_data)
    dense = sum(p.numel() for p in model.parameters())
    assert last["parameters"] < dense  # whole units dropped, not zeros counted
    assert last["latency_ms"] > 0
    assert method.params  # measured on a copy: the trial's method is not finalized
