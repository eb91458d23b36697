"""PLATON: hand-checked scores Ī·Ū, windows, persistence of masks and checkpoint round-trips."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from rayprune.methods import TrainingContext, get_method
from rayprune.methods.platon import PlatonMethod
from rayprune.methods.schedules import SparsitySchedule
from rayprune.models import prunable_targets
from rayprune.training.loop import method_step_hooks


# ---------------------------------------------------------------- helpers
def three_weights(values=(1.0, 1.0, 1.0)) -> nn.Module:
    """A module with one (1, 3) weight ``0.weight``: three entries whose scores we compute."""
    model = nn.Sequential(nn.Linear(3, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([values]))
    return model


def feed_gradients(method: PlatonMethod, model: nn.Module, grads: list[list[float]]) -> None:
    """Drive ``after_backward`` once per row of ``grads``, written into ``0.weight.grad``."""
    for step, row in enumerate(grads):
        method.context.step = step
        model[0].weight.grad = torch.tensor([row])
        method.after_backward(model)


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, num_labels=2, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config)


def batch_for(step: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + step)
    return {
        "input_ids": torch.randint(0, 100, (4, 8), generator=gen),
        "attention_mask": torch.ones(4, 8, dtype=torch.long),
        "labels": torch.randint(0, 2, (4,), generator=gen),
    }


def run_trial_steps(model, method, schedule, steps, optimizer) -> list[dict[str, torch.Tensor]]:
    """Trial steps: forward, task loss, backward, then the loop's hooks (``method_step_hooks``);
    returns the masks after each step."""
    context = method.context

    def optimizer_step(finite):
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    history = []
    for step in steps:
        context.step = step
        batch = batch_for(step)
        outputs = model(**batch)
        loss = method.task_loss(outputs, batch, None)
        if loss is None:
            loss = outputs.loss
        loss.backward()
        method_step_hooks(method, model, step=step, total=context.total_steps, schedule=schedule,
                          optimizer_step=optimizer_step)
        history.append({k: m.clone() for k, m in method.masks.items()})
    return history


# ---------------------------------------------------------------- scores by hand
def test_uncertainty_term_changes_the_ranking_as_its_formula_says():
    # θ = 1 everywhere, so I_t = |g|.  delta_t = 1: every step is its own window.
    # Entry A: I = 1, 1;  entry B: I = 3, 0 (same Ī as A, but it swings);  entry C: I = 1.2, 1.2.
    # β1 = β2 = 0.5:
    #   A: Ī 0.5 -> 0.75,  Ū 0.25 -> 0.125 + 0.5·|1 − 0.75| = 0.25   score 0.1875
    #   B: Ī 1.5 -> 0.75,  Ū 0.75 -> 0.375 + 0.5·|0 − 0.75| = 0.75   score 0.5625
    #   C: Ī 0.6 -> 0.9,   Ū 0.3  -> 0.15  + 0.5·|1.2 − 0.9| = 0.3   score 0.27
    grads = [[1.0, 3.0, 1.2], [1.0, 0.0, 1.2]]
    model = three_weights()
    method = PlatonMethod(beta1=0.5, beta2=0.5, delta_t=1)
    method.prepare(model, ["0.weight"], TrainingContext(total_steps=10))
    feed_gradients(method, model, grads)

    scores = method.score("0.weight", model[0].weight.detach())
    torch.testing.assert_close(scores, torch.tensor([[0.1875, 0.5625, 0.27]]))
    method.step(2 / 3)  # prune two of three: A and C, keep the uncertain B
    assert method.masks["0.weight"].tolist() == [[False, True, False]]
    assert model[0].weight.tolist() == [[0.0, 1.0, 0.0]]

    # Without the uncertainty (β2 = 1: score = Ī) the ranking is C > A = B, so C is kept.
    model_no_unc = three_weights()
    sensitivity_only = PlatonMethod(beta1=0.5, beta2=1.0, delta_t=1)
    sensitivity_only.prepare(model_no_unc, ["0.weight"], TrainingContext(total_steps=10))
    feed_gradients(sensitivity_only, model_no_unc, grads)
    torch.testing.assert_close(
        sensitivity_only.score("0.weight", model_no_unc[0].weight.detach()),
        torch.tensor([[0.75, 0.75, 0.9]]),
    )
    sensitivity_only.step(2 / 3)
    assert sensitivity_only.masks["0.weight"].tolist() == [[False, False, True]]


def test_importance_is_weight_times_gradient_with_paper_betas():
    # θ = (2, −0.5, 0), g = (0.25, 4, 7): I = |θ·g| = (0.5, 2, 0); one fold with β1 .85, β2 .95:
    # Ī = 0.15·I, Ū = 0.05·|I − 0.15·I| = 0.0425·I, score = 0.006375·I².
    model = three_weights((2.0, -0.5, 0.0))
    method = PlatonMethod(delta_t=1)  # paper defaults beta1=0.85, beta2=0.95
    method.prepare(model, ["0.weight"], TrainingContext(total_steps=10))
    feed_gradients(method, model, [[0.25, 4.0, 7.0]])
    expected = 0.15 * 0.05 * 0.85 * torch.tensor([[0.5, 2.0, 0.0]]) ** 2
    torch.testing.assert_close(method.score("0.weight", model[0].weight.detach()), expected)


def test_window_mean_is_folded_every_delta_t_steps_and_at_a_masking_event():
    model = three_weights()
    method = PlatonMethod(beta1=0.5, beta2=0.5, delta_t=2)
    method.prepare(model, ["0.weight"], TrainingContext(total_steps=10))
    weight = model[0].weight.detach()

    feed_gradients(method, model, [[1.0, 0.0, 0.0]])  # half a window: nothing folded yet
    assert method.score("0.weight", weight).tolist() == [[0.0, 0.0, 0.0]]
    method.context.step = 1
    model[0].weight.grad = torch.tensor([[3.0, 0.0, 0.0]])
    method.after_backward(model)
    # Window mean 2: Ī = 0.5·2 = 1, Ū = 0.5·|2 − 1| = 0.5.
    assert method.score("0.weight", weight)[0, 0].item() == pytest.approx(1.0 * 0.5)

    # One more step, then a masking event folds the partial window (mean 4):
    # Ī = 0.5·1 + 0.5·4 = 2.5, Ū = 0.5·0.5 + 0.5·|4 − 2.5| = 1.0.
    method.context.step = 2
    model[0].weight.grad = torch.tensor([[4.0, 0.0, 0.0]])
    method.after_backward(model)
    method.step(0.0)
    assert method.score("0.weight", weight)[0, 0].item() == pytest.approx(2.5 * 1.0)


def test_windows_align_on_the_schedule_and_stop_after_the_last_masking_event():
    # Ramp of 20 steps with start 0.25, end 0.75: masking events at 5, 7, ..., 13 and 14.
    schedule = SparsitySchedule(final_sparsity=0.5, start=0.25, end=0.75, interval=2)
    context = TrainingContext(total_steps=20, schedule=schedule)
    model = three_weights()
    method = PlatonMethod(beta1=0.5, beta2=0.5)  # delta_t from the schedule: 2
    method.prepare(model, ["0.weight"], context)
    folds_at = []
    for step in range(20):
        context.step = step
        model[0].weight.grad = torch.ones(1, 3)
        before = method.state_dict()["importance"]["folds"]
        method.after_backward(model)
        if method.state_dict()["importance"]["folds"] > before:
            folds_at.append(step)
    # Windows end on steps ≡ 5 (mod 2), i.e. at every masking event; none after step 14.
    assert folds_at == [1, 3, 5, 7, 9, 11, 13]
    assert method.state_dict()["importance"]["window_steps"] == 1  # step 14 only


# ---------------------------------------------------------------- training-loop behaviour
def _prepared_bert(schedule, total=20, **options):
    model = tiny_bert()
    context = TrainingContext(total_steps=total, learning_rate=1e-3, schedule=schedule)
    method = PlatonMethod(**options)
    method.prepare(model, prunable_targets(model, PlatonMethod.default_scope), context)
    return model, method


def test_pruned_weights_stay_zero_and_masks_only_grow():
    schedule = SparsitySchedule(final_sparsity=0.5, start=0.1, end=0.6, interval=2)
    model, method = _prepared_bert(schedule)
    assert any(t.endswith(".bias") for t in method.params)  # PLATON prunes biases too
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    history = run_trial_steps(model, method, schedule, range(20), optimizer)

    for before, after in zip(history, history[1:]):
        for fqn in after:
            assert not (after[fqn] & ~before[fqn]).any(), f"{fqn}: a pruned entry came back"
    for fqn, param in method.params.items():
        assert (param.detach()[~method.masks[fqn]] == 0).all()
    pruned = sum(int((~m).sum()) for m in method.masks.values())
    total = sum(m.numel() for m in method.masks.values())
    assert pruned == round(0.5 * total)


def test_state_dict_round_trip_restores_scores_masks_and_window():
    schedule = SparsitySchedule(final_sparsity=0.5, start=0.1, end=0.6, interval=4)
    model, method = _prepared_bert(schedule, total=20, delta_t=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    run_trial_steps(model, method, schedule, range(6), optimizer)  # mid-window, after pruning
    assert 0 < method.state_dict()["importance"]["window_steps"] < 4

    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)  # the trial's checkpoint path
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    clone = copy.deepcopy(model)
    restored = PlatonMethod(delta_t=4)
    restored.prepare(clone, list(method.params), TrainingContext(total_steps=20, schedule=schedule))
    restored.load_state_dict(state)
    for fqn, param in method.params.items():
        assert torch.equal(restored.masks[fqn], method.masks[fqn])
        assert torch.equal(restored.score(fqn, param), method.score(fqn, param))

    # Continuing both runs from the same point gives the same masks (the window was restored).
    opt_a = torch.optim.SGD(model.parameters(), lr=1e-3)
    opt_b = torch.optim.SGD(clone.parameters(), lr=1e-3)
    masks_a = run_trial_steps(model, method, schedule, range(6, 12), opt_a)
    masks_b = run_trial_steps(clone, restored, schedule, range(6, 12), opt_b)
    for fqn in masks_a[-1]:
        assert torch.equal(masks_a[-1][fqn], masks_b[-1][fqn])


def test_load_state_dict_rejects_statistics_of_other_targets():
    model = three_weights()
    method = PlatonMethod(delta_t=1)
    method.prepare(model, ["0.weight"], TrainingContext(total_steps=10))
    state = method.state_dict()
    state["importance"]["sensitivity"] = {"other.weight": torch.zeros(1, 3)}
    with pytest.raises(ValueError, match="sensitivity"):
        method.load_state_dict(state)


# ---------------------------------------------------------------- options and registry
def test_registry_defaults_and_scope():
    cls = get_method("platon")
    assert cls is PlatonMethod
    assert cls.default_scope == "encoder_linear_bias"
    assert cls.schedule_defaults["kind"] == "cubic" and cls.schedule_defaults["interval"] == 10
    options = cls().options
    assert (options.beta1, options.beta2, options.delta_t) == (0.85, 0.95, None)


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"beta1": 1.0}, ValueError, "beta1"),
        ({"beta2": 1.5}, ValueError, "beta2"),
        ({"beta1": "0.9"}, TypeError, "beta1"),
        ({"delta_t": 0}, ValueError, "delta_t"),
        ({"delta_t": 2.5}, TypeError, "delta_t"),
        ({"window": 3}, ValueError, "window"),
    ],
)
def test_invalid_options_name_the_option(kwargs, error, name):
    with pytest.raises(error, match=name):
        PlatonMethod(**kwargs)


def test_step_before_any_statistics_warns():
    model = three_weights()
    method = PlatonMethod(delta_t=1)
    method.prepare(model, ["0.weight"], TrainingContext(total_steps=10))
    with pytest.warns(RuntimeWarning, match="before any gradient statistics"):
        method.step(0.5)
