"""PINS: the ILP score, the confidence weight α, T²-scaled self-distillation, teacher selection on
the selection split, regression, persistence of masks and checkpoint round-trips."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from rayprune.methods import TrainingContext, get_method
from rayprune.methods.pins import PINSMethod, confidence_weight, self_distillation_loss
from rayprune.methods.platon import PlatonMethod
from rayprune.methods.schedules import SparsitySchedule
from rayprune.models import prunable_targets
from rayprune.training.loop import method_step_hooks


# ---------------------------------------------------------------- helpers
def three_weights(values) -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([values]))
    return model


def tiny_bert(num_labels: int = 2, seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, num_labels=num_labels, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    if num_labels == 1:
        config.problem_type = "regression"
    return BertForSequenceClassification(config)


def batch_for(step: int, regression: bool = False) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + step)
    labels = torch.rand(4, generator=gen) if regression else torch.randint(0, 2, (4,), generator=gen)
    return {
        "input_ids": torch.randint(0, 100, (4, 8), generator=gen),
        "attention_mask": torch.ones(4, 8, dtype=torch.long),
        "labels": labels,
    }


def train_step(model, method, optimizer, step, schedule=None, regression=False) -> torch.Tensor:
    """One trial step: forward, task loss, backward, then the loop's hooks
    (``method_step_hooks``); returns the loss used."""
    context = method.context
    context.step = step
    batch = batch_for(step, regression)
    outputs = model(**batch)
    loss = method.task_loss(outputs, batch, None)
    if loss is None:
        loss = outputs.loss
    loss.backward()

    def optimizer_step(finite):
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    method_step_hooks(method, model, step=step, total=context.total_steps, schedule=schedule,
                      optimizer_step=optimizer_step)
    return loss


class ScriptedSelection:
    """A fake ``evaluate_selection``: returns the next scripted metric and records a copy of the
    weights it was shown (switching the model to eval mode, as the real evaluator does)."""

    def __init__(self, metrics):
        self.metrics = list(metrics)
        self.seen: list[dict[str, torch.Tensor]] = []

    def __call__(self, model: nn.Module) -> float:
        model.eval()
        self.seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return self.metrics[len(self.seen) - 1]


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- the ILP score
def test_score_ranks_by_the_first_order_ilp_solution():
    # θ = (1, 0.1, 1), g = (1, 2, −1), η = 0.5:
    #   |θ·g|           = (1, 0.2, 1)      -> PLATON prunes entry 1
    #   |−θ·g + η·g²|   = (0.5, 1.8, 1.5)  -> PINS prunes entry 0
    # delta_t = 1 and β1 = β2 = 0.5, one step: Ī = 0.5·S, Ū = 0.5·|S − 0.5·S|, score = 0.125·S².
    theta, grad = (1.0, 0.1, 1.0), [[1.0, 2.0, -1.0]]
    pins_model = three_weights(theta)
    pins = PINSMethod(beta1=0.5, beta2=0.5, delta_t=1, self_distill=False)
    pins.prepare(pins_model, ["0.weight"], TrainingContext(total_steps=10, learning_rate=0.5))
    pins_model[0].weight.grad = torch.tensor(grad)
    pins.after_backward(pins_model)
    torch.testing.assert_close(
        pins.score("0.weight", pins_model[0].weight.detach()),
        0.125 * torch.tensor([[0.5, 1.8, 1.5]]) ** 2,
    )
    pins.step(1 / 3)
    assert pins.masks["0.weight"].tolist() == [[False, True, True]]

    platon_model = three_weights(theta)
    platon = PlatonMethod(beta1=0.5, beta2=0.5, delta_t=1)
    platon.prepare(platon_model, ["0.weight"], TrainingContext(total_steps=10, learning_rate=0.5))
    platon_model[0].weight.grad = torch.tensor(grad)
    platon.after_backward(platon_model)
    platon.step(1 / 3)
    assert platon.masks["0.weight"].tolist() == [[True, False, True]]


def test_score_reads_the_current_learning_rate_each_step():
    # With η = 0 the PINS importance is PLATON's |θ·g|; η is read at every after_backward.
    model = three_weights((1.0, 0.1, 1.0))
    context = TrainingContext(total_steps=10, learning_rate=0.0)
    pins = PINSMethod(beta1=0.0, beta2=0.0, delta_t=1, self_distill=False)
    pins.prepare(model, ["0.weight"], context)
    model[0].weight.grad = torch.tensor([[1.0, 2.0, -1.0]])
    pins.after_backward(model)
    # β1 = 0 and delta_t = 1: Ī is this step's importance; read it from the checkpoint state.
    torch.testing.assert_close(pins.state_dict()["importance"]["sensitivity"]["0.weight"],
                               torch.tensor([[1.0, 0.2, 1.0]]))
    context.step, context.learning_rate = 1, 0.5
    pins.after_backward(model)
    torch.testing.assert_close(pins.state_dict()["importance"]["sensitivity"]["0.weight"],
                               torch.tensor([[0.5, 1.8, 1.5]]))


# ---------------------------------------------------------------- the self-distillation loss
def test_alpha_is_zero_for_uniform_and_near_one_for_confident_predictions():
    alpha = confidence_weight(torch.tensor([[0.0, 0.0], [3.0, 3.0], [20.0, 0.0]]))
    assert alpha[0].item() == pytest.approx(0.0, abs=1e-6)
    assert alpha[1].item() == pytest.approx(0.0, abs=1e-6)
    assert alpha[2].item() > 0.999
    three = confidence_weight(torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 30.0]]))
    assert three[0].item() == pytest.approx(0.0, abs=1e-6) and three[1].item() > 0.999
    # p = (0.75, 0.25): H = −0.75 ln 0.75 − 0.25 ln 0.25 = 0.56234, α = 1 − H/ln 2 = 0.18872.
    mid = confidence_weight(torch.tensor([[math.log(3.0), 0.0]]))
    assert mid.item() == pytest.approx(0.18872, abs=1e-5)
    logits = torch.tensor([[2.0, 0.0]], requires_grad=True)
    assert not confidence_weight(logits).requires_grad  # detached


def test_kd_term_is_scaled_by_temperature_squared():
    # Student z_S = (ln 3, 0): p_S = (0.75, 0.25), α = 0.18872 (above); label 0: CE = −ln 0.75.
    # Teacher z_T = (0, 0): softmax(z_T/2) = (0.5, 0.5).  softmax(z_S/2) = (√3, 1)/(√3 + 1).
    # KD = T²·(−0.5·ln(√3/(√3+1)) − 0.5·ln(1/(√3+1))) = 4·ln(√3+1) − ln 3 = 2.92160.
    s3 = math.sqrt(3.0)
    kd = 4.0 * (-0.5 * math.log(s3 / (s3 + 1)) - 0.5 * math.log(1 / (s3 + 1)))
    assert kd == pytest.approx(2.92160, abs=1e-5)
    entropy = -0.75 * math.log(0.75) - 0.25 * math.log(0.25)
    alpha = 1 - entropy / math.log(2)
    expected = alpha * kd + (1 - alpha) * -math.log(0.75)  # = 0.78476
    loss = self_distillation_loss(
        torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([0]), 2.0
    )
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert loss.item() == pytest.approx(0.78476, abs=1e-5)


# ---------------------------------------------------------------- the self-teacher
def _prepared(evaluate, total=12, num_labels=2, **options):
    model = tiny_bert(num_labels)
    context = TrainingContext(
        total_steps=total, learning_rate=1e-3, evaluate_selection=evaluate,
        num_labels=num_labels, is_regression=num_labels == 1,
    )
    method = PINSMethod(**options)
    method.prepare(model, prunable_targets(model, PINSMethod.default_scope), context)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    return model, method, optimizer


def test_teacher_is_replaced_only_when_the_selection_metric_improves():
    selection = ScriptedSelection([0.5, 0.4, 0.7, 0.7])
    model, method, optimizer = _prepared(selection, eval_interval=2)

    def teacher_weights():
        return method.state_dict()["self_distillation"]["teacher"]

    probe = batch_for(99)
    probe_outputs = model(**probe)
    assert method.task_loss(probe_outputs, probe, None) is None  # no teacher before evaluating
    train_step(model, method, optimizer, 0)
    assert selection.seen == [] and teacher_weights() is None

    train_step(model, method, optimizer, 1)  # after update 2: first evaluation, metric 0.5
    assert len(selection.seen) == 1 and same_weights(teacher_weights(), selection.seen[0])
    assert model.training  # the evaluator's model.eval() was undone

    for step in (2, 3):  # metric 0.4 < 0.5: the teacher is kept
        train_step(model, method, optimizer, step)
    assert same_weights(teacher_weights(), selection.seen[0])
    assert not same_weights(selection.seen[1], selection.seen[0])

    for step in (4, 5):  # metric 0.7 > 0.5: replaced
        train_step(model, method, optimizer, step)
    assert same_weights(teacher_weights(), selection.seen[2])

    for step in (6, 7):  # metric 0.7, not strictly better: kept
        train_step(model, method, optimizer, step)
    assert len(selection.seen) == 4
    assert same_weights(teacher_weights(), selection.seen[2])
    assert method.state_dict()["self_distillation"]["best_metric"] == 0.7


def test_task_loss_distils_from_the_teacher_forward():
    selection = ScriptedSelection([0.5])
    model, method, optimizer = _prepared(selection, eval_interval=1)
    train_step(model, method, optimizer, 0)  # teacher = the student right now
    batch = batch_for(50)
    outputs = model(**batch)
    loss = method.task_loss(outputs, batch, None)
    assert loss is not None and loss.requires_grad
    # Teacher == student (no dropout), so KD_i = T²·H(softmax(z/T)):
    z = outputs.logits.detach()
    p_t = torch.softmax(z / 2, dim=-1)
    kd = 4.0 * -(p_t * torch.log_softmax(z / 2, dim=-1)).sum(-1)
    ce = torch.nn.functional.cross_entropy(z, batch["labels"], reduction="none")
    p = torch.softmax(z, dim=-1)
    alpha = 1 + (p * p.log()).sum(-1) / math.log(2)
    torch.testing.assert_close(loss.detach(), (alpha * kd + (1 - alpha) * ce).mean())


def test_regression_uses_no_distillation_and_no_evaluation():
    def never(model):
        raise AssertionError("regression must not evaluate the selection split")

    model, method, optimizer = _prepared(never, num_labels=1, eval_interval=1)
    for step in range(3):
        loss = train_step(model, method, optimizer, step, regression=True)
    batch = batch_for(7, regression=True)
    outputs = model(**batch)
    assert method.task_loss(outputs, batch, None) is None
    assert torch.isfinite(loss)


def test_self_distill_off_never_evaluates():
    def never(model):
        raise AssertionError("self_distill=False must not evaluate")

    model, method, optimizer = _prepared(never, eval_interval=1, self_distill=False)
    for step in range(3):
        train_step(model, method, optimizer, step)
    batch = batch_for(7)
    assert method.task_loss(model(**batch), batch, None) is None


def test_missing_selection_split_is_an_error_at_the_first_evaluation():
    model, method, optimizer = _prepared(None, eval_interval=2)
    train_step(model, method, optimizer, 0)
    with pytest.raises(ValueError, match="evaluate_selection"):
        train_step(model, method, optimizer, 1)


# ---------------------------------------------------------------- masks and checkpoints
def test_pruned_weights_stay_zero_with_self_distillation():
    schedule = SparsitySchedule(final_sparsity=0.6, start=0.1, end=0.6, interval=2)
    selection = ScriptedSelection([0.1 * i for i in range(20)])
    model, method, optimizer = _prepared(selection, total=20, eval_interval=3)
    method.context.schedule = schedule
    previous = None
    for step in range(20):
        train_step(model, method, optimizer, step, schedule)
        for fqn, param in method.params.items():
            assert (param.detach()[~method.masks[fqn]] == 0).all()
            if previous is not None:
                assert not (method.masks[fqn] & ~previous[fqn]).any()
        previous = {k: m.clone() for k, m in method.masks.items()}
    total = sum(m.numel() for m in method.masks.values())
    assert sum(int((~m).sum()) for m in method.masks.values()) == round(0.6 * total)
    # The teacher is the masked student of the last improvement: its pruned entries are zero.
    teacher = method.state_dict()["self_distillation"]["teacher"]
    assert same_weights(teacher, selection.seen[-1])


def test_state_dict_round_trip_restores_scores_masks_and_teacher():
    schedule = SparsitySchedule(final_sparsity=0.5, start=0.1, end=0.6, interval=2)
    selection = ScriptedSelection([0.5, 0.8, 0.6])
    model, method, optimizer = _prepared(selection, total=20, eval_interval=3)
    for step in range(7):  # evaluations after updates 3 and 6; pruning from step 2
        train_step(model, method, optimizer, step, schedule)

    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    clone = copy.deepcopy(model)
    restored_selection = ScriptedSelection([0.8])
    context = TrainingContext(total_steps=20, learning_rate=1e-3, evaluate_selection=restored_selection)
    restored = PINSMethod(eval_interval=3)
    restored.prepare(clone, list(method.params), context)
    restored.load_state_dict(state)
    for fqn, param in method.params.items():
        assert torch.equal(restored.masks[fqn], method.masks[fqn])
        assert torch.equal(restored.score(fqn, param), method.score(fqn, param))
    batch = batch_for(60)
    torch.testing.assert_close(
        restored.task_loss(clone(**batch), batch, None), method.task_loss(model(**batch), batch, None)
    )
    # The best metric came back too: 0.8 at the next evaluation is not an improvement.
    teacher_before = restored.state_dict()["self_distillation"]["teacher"]
    opt = torch.optim.AdamW(clone.parameters(), lr=1e-3, weight_decay=0.0)
    for step in (7, 8):
        train_step(clone, restored, opt, step, schedule)
    assert len(restored_selection.seen) == 1
    assert same_weights(restored.state_dict()["self_distillation"]["teacher"], teacher_before)


# ---------------------------------------------------------------- options and registry
def test_registry_defaults():
    cls = get_method("pins")
    assert cls is PINSMethod and issubclass(cls, PlatonMethod)
    assert cls.default_scope == "encoder_linear_bias" and cls.needs_teacher is False
    assert cls.schedule_defaults == {"kind": "cubic", "start": 0.064, "end": 0.615, "interval": 10}
    o = cls().options
    assert (o.beta1, o.beta2, o.temperature, o.eval_interval, o.self_distill) == (
        0.85, 0.99, 2.0, 50, True
    )


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"temperature": 0.0}, ValueError, "temperature"),
        ({"temperature": "2"}, TypeError, "temperature"),
        ({"eval_interval": 0}, ValueError, "eval_interval"),
        ({"self_distill": 1}, TypeError, "self_distill"),
        ({"beta2": -0.1}, ValueError, "beta2"),
    ],
)
def test_invalid_options_name_the_option(kwargs, error, name):
    with pytest.raises(error, match=name):
        PINSMethod(**kwargs)
