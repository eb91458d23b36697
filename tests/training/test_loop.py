"""The trial loop: hook order, measured sparsity, reports, checkpoint/resume."""

from __future__ import annotations

import pytest
import torch

from rayprune.methods import PruningMethod, register
from rayprune.training import TrialConfig, TrialSettings, eval_steps, run_training
from rayprune.training.loop import method_step_hooks



@pytest.fixture(scope="module")
def demo_data(demo_data_of):
    return demo_data_of(120, 40)


EVENTS: list[str] = []


class RecordingMethod(PruningMethod):
    """Records every hook the trial calls; scores by |w|."""

    description = "test-only: records hook order"
    schedule_defaults = {"start": 0.0, "end": 0.5, "interval": 2}

    def score(self, fqn, weight):
        return weight.abs()

    def task_loss(self, outputs, batch, teacher_outputs):
        EVENTS.append("task_loss")
        return None

    def extra_loss(self, outputs, batch, teacher_outputs):
        EVENTS.append("extra_loss")
        return None

    def after_backward(self, model):
        has_grad = all(p.grad is not None for p in self.params.values())
        EVENTS.append("after_backward" + ("" if has_grad else "(no grad!)"))

    def after_optimizer_step(self, model):
        EVENTS.append("after_optimizer_step")

    def step(self, sparsity):
        EVENTS.append(f"step({sparsity:.3f})")
        return super().step(sparsity)

    def apply_masks(self):
        EVENTS.append("apply_masks")
        super().apply_masks()


@pytest.fixture
def recording_method():
    """Register the recording method for one test only (the registry is global)."""
    from rayprune import methods

    register("recording")(RecordingMethod)
    yield "recording"
    methods._REGISTERED.pop("recording", None)


def settings_for(model_dir: str, **changes) -> TrialSettings:
    base = dict(model=model_dir, metric="accuracy", steps=6, batch_size=8, eval_interval=3, threads=1)
    return TrialSettings(**{**base, **changes})


def test_hooks_fire_in_the_documented_order(tiny_dir, demo_data, recording_method):
    EVENTS.clear()
    settings = settings_for(tiny_dir, steps=4, eval_interval=4)
    config = TrialConfig.from_flat({"method": "recording", "target_sparsity": 0.5}, settings)
    run_training(config, settings, demo_data)
    per_step = ["task_loss", "extra_loss", "after_backward", "after_optimizer_step"]
    # Ramp over steps 0..1 (end = 0.5 of 4 steps), interval 2: masks at steps 0 and 1.
    expected = (
        per_step + ["step(0.000)", "apply_masks", "apply_masks"]
        + per_step + ["step(0.500)", "apply_masks", "apply_masks"]
        + (per_step + ["apply_masks"]) * 2
    )
    assert EVENTS == expected


class _Hooks:
    """A stand-in method and schedule for :func:`method_step_hooks` that records what it is
    called with; the schedule asks for a masking step at every step."""

    def __init__(self):
        self.events = []

    def after_backward(self, model):
        self.events.append("after_backward")

    def after_optimizer_step(self, model):
        self.events.append("after_optimizer_step")

    def step(self, sparsity):
        self.events.append(f"step({sparsity})")

    def apply_masks(self):
        self.events.append("apply_masks")

    def should_update(self, step, total):
        return True

    def sparsity_at(self, step, total):
        return step / total

    def extra_backward(self, returns):
        def backward():
            self.events.append("extra_backward")
            return returns
        return backward


def _step_events(*, finite=True, extra=False, extra_returns=None, method=True):
    """(what ``method_step_hooks`` returned, the calls it made) for step 1 of 4; ``extra``: the
    step has an extra loss, whose backward returns ``extra_returns``."""
    hooks = _Hooks()
    taken = method_step_hooks(
        hooks if method else None, None, step=1, total=4, schedule=hooks,
        optimizer_step=lambda finite: hooks.events.append(f"optimizer_step({finite})"),
        extra_backward=hooks.extra_backward(extra_returns) if extra else None, finite=finite)
    return taken, hooks.events


def test_step_hooks_order_and_what_an_overflow_skips():
    masking = ["step(0.25)", "apply_masks"]
    assert _step_events() == (True, ["after_backward", "optimizer_step(True)", "after_optimizer_step",
                                     *masking])
    # an extra backward returning None (a plain extra.backward) or True: a finite step
    for returns in (None, True):
        assert _step_events(extra=True, extra_returns=returns) == (
            True, ["after_backward", "extra_backward", "optimizer_step(True)", "after_optimizer_step", *masking])
    # fp16: the task gradients overflowed; the method reads nothing, the step is skipped,
    # the masking schedule goes on
    assert _step_events(finite=False, extra=True) == (False, ["optimizer_step(False)", *masking])
    # fp16: only the extra loss's gradients overflowed
    assert _step_events(extra=True, extra_returns=False) == (
        False, ["after_backward", "extra_backward", "optimizer_step(False)", *masking])
    # no method: the optimizer step alone
    assert _step_events(method=False) == (True, ["optimizer_step(True)"])


def test_reports_measured_sparsity_at_every_evaluation(tiny_dir, demo_data):
    reports = []
    settings = settings_for(tiny_dir)
    config = TrialConfig.from_flat(
        {"method": "magnitude", "target_sparsity": 0.7, "schedule.start": 0.0, "schedule.end": 0.5}, settings)
    model, method, final = run_training(config, settings, demo_data, report=lambda m, w: reports.append(m))
    assert [r["step"] for r in reports] == eval_steps(6, 3) == [3, 6]
    assert reports[-1]["budget_fraction"] == 1.0
    assert reports[-1]["target_sparsity"] == 0.7
    # measured, not copied: equals the zero fraction of the prunable weights
    zeros = sum(int((p == 0).sum()) for p in method.params.values())
    total = sum(p.numel() for p in method.params.values())
    assert reports[-1]["sparsity"] == pytest.approx(zeros / total)
    assert abs(reports[-1]["sparsity"] - 0.7) < 1e-4
    assert 0 < reports[-1]["sparsity_encoder"] < reports[-1]["sparsity"]
    for key in ("accuracy", "train_loss", "scheduled_sparsity"):
        assert key in reports[-1]


def test_method_diagnostics_are_reported_with_every_evaluation(tiny_dir, demo_data):
    reports = []
    settings = settings_for(tiny_dir)
    config = TrialConfig.from_flat(
        {"method": "rpp", "target_sparsity": 0.6, "rpp.lam": 0.5, "learning_rate": 1e-2,
         "schedule.start": 0.0, "schedule.end": 0.5, "schedule.interval": 1}, settings)
    run_training(config, settings, demo_data, report=lambda m, w: reports.append(m))
    last = reports[-1]
    # How RPP got there: the prox's zeros plus the magnitude top-up make up the measured sparsity.
    assert last["method/prox_pruned"] > 0
    assert last["method/prox_pruned"] + last["method/magnitude_pruned"] == pytest.approx(last["sparsity"])


def test_resume_from_checkpoint_reproduces_the_uninterrupted_run(tiny_dir, demo_data, tmp_path):
    settings = settings_for(tiny_dir, steps=6, eval_interval=3, checkpoint_budget=1.0)
    flat = {"method": "movement", "target_sparsity": 0.6, "schedule.start": 0.0, "schedule.end": 1.0,
            "learning_rate": 1e-3}
    config = TrialConfig.from_flat(flat, settings)
    ckpt = tmp_path / "step3"

    def checkpoint_at_step_3(metrics, writer):
        if metrics["step"] == 3:
            writer(ckpt)  # written while the run is at step 3

    full_model, _, full_metrics = run_training(config, settings, demo_data, report=checkpoint_at_step_3)
    assert (ckpt / "model.safetensors").exists()
    resumed_model, _, resumed_metrics = run_training(config, settings, demo_data, resume_from=ckpt)
    for (name, a), b in zip(full_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed_metrics["accuracy"] == full_metrics["accuracy"]
    assert resumed_metrics["sparsity"] == full_metrics["sparsity"]


def test_the_final_checkpoint_holds_no_optimizer_and_a_resume_from_it_trains_nothing(tiny_dir, demo_data, tmp_path):
    """A trial's last checkpoint skips AdamW's moments (two thirds of its bytes): nothing is left
    to train.  A trial that Ray restarts from it (the driver died before the end was recorded)
    ends at once with the same weights."""
    settings = settings_for(tiny_dir, steps=6, eval_interval=3, checkpoint_budget=1.0)
    config = TrialConfig.from_flat({"method": "magnitude", "target_sparsity": 0.5, "learning_rate": 1e-3}, settings)
    written = {}

    def keep(metrics, writer):
        writer(tmp_path / str(metrics["step"]))
        written[metrics["step"]] = torch.load(tmp_path / str(metrics["step"]) / "trainer_state.pt", weights_only=True)

    model, _, _ = run_training(config, settings, demo_data, report=keep)
    assert written[3]["optimizer"] is not None and written[3]["lr_scheduler"] is not None
    assert written[6]["optimizer"] is None and written[6]["lr_scheduler"] is None
    reports = []
    resumed, _, _ = run_training(config, settings, demo_data, resume_from=tmp_path / "6",
                                 report=lambda m, w: reports.append(m))
    assert reports == []
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("flat", [
    {"method": "rpp", "rpp.stage": "mlm", "rpp.mlm_steps": 2, "rpp.mlm_head_warmup_steps": 1,
     "rpp.mlm_batch_size": 4},
    {"method": "grain", "grain.embedding_rank": 8, "grain.hidden_loss_weight": 0.0},
], ids=["rpp-mlm", "grain-ef"])
def test_export_rebuilds_the_trained_model_from_its_checkpoint(tiny_dir, demo_data, tmp_path, flat):
    """load_trained (what `rayprune export` uses) must give back the trained weights without
    training anything again (RPP's mlm stage) and with the structure prepare made (GRAIN's
    factorised embeddings)."""
    from rayprune.training import load_trained

    settings = settings_for(tiny_dir, steps=4, eval_interval=4, teacher_dir=tiny_dir)  # any dense model
    config = TrialConfig.from_flat({**flat, "target_sparsity": 0.5, "schedule.start": 0.0, "schedule.end": 0.5},
                                   settings)
    ckpt = tmp_path / "final"
    model, _, _ = run_training(config, settings, demo_data, report=lambda m, w: w(ckpt) if w else None)
    info = {"num_labels": demo_data.num_labels, "is_regression": False}
    again, method = load_trained(ckpt, config, settings, info)
    assert method is not None
    trained = model.state_dict()
    assert sorted(again.state_dict()) == sorted(trained)
    for name, tensor in again.state_dict().items():
        assert torch.equal(tensor, trained[name]), name


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_a_one_shot_method_prunes_from_train_calibration_batches_then_fine_tunes_frozen(method, tiny_dir, demo_data):
    """The loop hands one-shot methods calibration batches from the train split; at schedule.start 0
    they prune before the first step and the mask stays frozen while the rest of the budget
    fine-tunes (2:4 here: every group of 4 inputs keeps at most 2 weights)."""
    reports = []
    settings = settings_for(tiny_dir)
    config = TrialConfig.from_flat(
        {"method": method, "target_sparsity": 0.5, f"{method}.sparsity_pattern": "2:4",
         f"{method}.calibration_samples": 16}, settings)
    model, pruner, _ = run_training(config, settings, demo_data, report=lambda m, w: reports.append(m))
    assert [r["step"] for r in reports] == [3, 6]
    for report in reports:  # pruned before the first evaluation, and so it stays
        assert report["sparsity"] == pytest.approx(0.5, abs=1e-6)
        assert report[f"method/nm_violations"] == 0
    assert reports[-1]["method/calibration_samples_seen"] == 16
    weights = dict(model.named_parameters())
    some = next(iter(pruner.params))
    groups = (weights[some] != 0).reshape(weights[some].shape[0], -1, 4).sum(-1)
    assert int(groups.max()) <= 2
