"""GRAIN and the heads+FFN baseline on a tiny config-built BERT (CPU, seconds).

Tiny model: hidden d = 32, 4 heads of 8, FFN 64, 2 layers.  Unit costs: query 2d+2 = 66,
value 2d+1 = 65, FFN 2d+1 = 65, whole head 8 * (66 + 65) = 1048; encoder 8544 per layer.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from rayprune.methods import SparsitySchedule, TrainingContext, get_method
from rayprune.methods.structured.grain import GrainMethod, HeadFFNMethod
from rayprune.models import encoder_parameters, prunable_targets
from rayprune.methods.structured.models import read_pruned_layout, shrink_model
from rayprune.training.loop import method_step_hooks

HEADS, HEAD, D, FFN = 4, 8, 32, 64
Q_COST, V_COST, F_COST = 2 * D + 2, 2 * D + 1, 2 * D + 1
ENCODER_PER_LAYER = 4 * D * D + 4 * D + 2 * D * FFN + FFN + D + 4 * D


def tiny_bert(seed: int = 0, layers: int = 2, num_labels: int = 2) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=100, hidden_size=D, num_hidden_layers=layers, num_attention_heads=HEADS,
        intermediate_size=FFN, num_labels=num_labels,
    )
    model = BertForSequenceClassification(config)
    with torch.no_grad():  # no exact zeros anywhere, so a zero means "pruned"
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model.eval()  # dropout off: forwards are reproducible


def prepared(cls=GrainMethod, model=None, scope=None, **options):
    model = tiny_bert() if model is None else model
    method = cls(**options)
    targets = prunable_targets(model, scope or cls.default_scope)
    method.prepare(model, targets, TrainingContext(total_steps=100, num_labels=2))
    return model, method


def layer_modules(model, i):
    layer = model.bert.encoder.layer[i]
    a = layer.attention.self
    return a.query, a.key, a.value, layer.attention.output.dense, layer.intermediate.dense, layer.output.dense


def batch_of(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (3, 7), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    mask[2, 2:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1])}


def set_unit_grads(method, model, *, query=1.0, value=1.0, ffn=1.0):
    """Set .grad so that every unit's IS is exactly the given value: a scalar for all units, or
    a dict {(layer, unit index): value} over a default of 1."""

    def value_of(spec, layer, k):
        return spec if not isinstance(spec, dict) else spec.get((layer, k), 1.0)

    for fqn, p in method.params.items():
        p.grad = torch.zeros_like(p)
    with torch.no_grad():
        for i in range(len(model.bert.encoder.layer)):
            q, _, _, o, _, w2 = layer_modules(model, i)
            for k in range(HEADS * HEAD):
                norm = q.weight[k].pow(2).sum() + q.bias[k] ** 2  # g = s * w / |w|^2 gives g.w = s
                s = value_of(query, i, k)
                q.weight.grad[k] = s * q.weight[k] / norm
                q.bias.grad[k] = s * q.bias[k] / norm
                s = value_of(value, i, k)
                o.weight.grad[:, k] = s * o.weight[:, k] / o.weight[:, k].pow(2).sum()
            for j in range(FFN):
                s = value_of(ffn, i, j)
                w2.weight.grad[:, j] = s * w2.weight[:, j] / w2.weight[:, j].pow(2).sum()


def unit_score(method, model, layer, kind, k):
    """Read one unit's smoothed score back through the public score(fqn, weight)."""
    q, _, _, o, _, w2 = layer_modules(model, layer)
    prefix = f"bert.encoder.layer.{layer}."
    if kind == "query":
        return method.score(prefix + "attention.self.query.weight", q.weight)[k, 0].item()
    if kind == "value":
        return method.score(prefix + "attention.output.dense.weight", o.weight)[0, k].item()
    return method.score(prefix + "output.dense.weight", w2.weight)[0, k].item()


def zero_fraction_of_encoder(model) -> float:
    params = encoder_parameters(model)
    return sum(int((p == 0).sum()) for p in params.values()) / sum(p.numel() for p in params.values())


# --------------------------------------------------------------------------------- registry


def test_registry_and_class_attributes():
    assert get_method("grain") is GrainMethod
    assert get_method("head_ffn") is HeadFFNMethod
    assert GrainMethod.needs_teacher and GrainMethod.needs_hidden_states
    assert GrainMethod.structured and HeadFFNMethod.structured
    defaults = GrainMethod.schedule_defaults
    schedule = SparsitySchedule(final_sparsity=0.9, **defaults)
    assert (schedule.kind, schedule.start, schedule.end, schedule.interval) == ("cubic", 0.2, 0.4, 1)
    # density 1 before 20% of training, cubic down to the target between 20% and 40%
    assert schedule.sparsity_at(19, 100) == 0.0
    assert schedule.sparsity_at(100 * 4 // 10, 100) == pytest.approx(0.9)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"temperature": 0.0}, "temperature"),
        ({"beta": 1.0}, "beta"),
        ({"alpha": -0.1}, "alpha"),
        ({"hidden_loss_weight": -1.0}, "hidden_loss_weight"),
        ({"hidden_layers": "odd"}, "hidden_layers"),
        ({"selection": "layer"}, "selection"),
        ({"embedding_dim": 192}, "unknown option"),
    ],
)
def test_bad_options_raise_value_error(options, match):
    with pytest.raises(ValueError, match=match):
        GrainMethod(**options)


def test_head_ffn_has_no_structreg_option():
    with pytest.raises(ValueError, match="unknown option"):
        HeadFFNMethod(alpha=0.3)


def test_prepare_tracks_unit_biases_even_with_weight_only_scope():
    model, method = prepared(scope="encoder_linear")
    prefix = "bert.encoder.layer.0."
    for name in ("attention.self.query.bias", "attention.self.key.bias", "attention.self.value.bias",
                 "intermediate.dense.bias"):
        assert prefix + name in method.masks
    # the output biases belong to no unit and are never pruned
    assert prefix + "attention.output.dense.bias" not in method.masks
    assert prefix + "output.dense.bias" not in method.masks


def test_prepare_rejects_an_already_shrunk_model():
    model = tiny_bert()
    with torch.no_grad():
        model.bert.encoder.layer[0].intermediate.dense.weight[:5] = 0
        model.bert.encoder.layer[0].intermediate.dense.bias[:5] = 0
        model.bert.encoder.layer[0].output.dense.weight[:, :5] = 0
    small = shrink_model(model)
    with pytest.raises(ValueError, match="dense shapes"):
        GrainMethod().prepare(small, prunable_targets(small, "encoder_linear"), TrainingContext(total_steps=10))


def test_prepare_rejects_targets_outside_units():
    model = tiny_bert()
    method = GrainMethod()
    with pytest.raises(ValueError, match="belong to none"):
        method.prepare(model, prunable_targets(model, "all_linear"), TrainingContext(total_steps=10))


# ----------------------------------------------------------------------------------- scores


def test_unit_scores_match_hand_computation():
    model, method = prepared(beta=0.0, alpha=0.0)  # beta=0: the score is this step's IS
    gen = torch.Generator().manual_seed(3)
    for p in method.params.values():
        p.grad = torch.randn(p.shape, generator=gen)
    method.after_backward(model)
    model.requires_grad_(False)  # plain numbers for the hand sums below
    for i in range(2):
        q, k, v, o, w1, w2 = layer_modules(model, i)
        prefix = f"bert.encoder.layer.{i}."
        score = {name: method.score(prefix + name, p) for name, p in {
            "attention.self.query.weight": q.weight, "attention.self.key.weight": k.weight,
            "attention.self.query.bias": q.bias, "attention.self.value.weight": v.weight,
            "attention.output.dense.weight": o.weight, "intermediate.dense.weight": w1.weight,
            "intermediate.dense.bias": w1.bias, "output.dense.weight": w2.weight}.items()}
        for unit in range(HEADS * HEAD):
            hand_q = abs(sum(float(q.weight.grad[unit, c] * q.weight[unit, c]) for c in range(D))
                         + float(q.bias.grad[unit] * q.bias[unit]))
            hand_v = abs(sum(float(o.weight.grad[r, unit] * o.weight[r, unit]) for r in range(D)))
            for name in ("attention.self.query.weight", "attention.self.key.weight"):
                assert torch.allclose(score[name][unit], torch.full((D,), hand_q), rtol=1e-5, atol=1e-6)
            assert score["attention.self.query.bias"][unit].item() == pytest.approx(hand_q, rel=1e-5, abs=1e-6)
            assert torch.allclose(score["attention.self.value.weight"][unit], torch.full((D,), hand_v), rtol=1e-5, atol=1e-6)
            assert torch.allclose(score["attention.output.dense.weight"][:, unit], torch.full((D,), hand_v), rtol=1e-5, atol=1e-6)
        for j in range(FFN):
            hand_f = abs(sum(float(w2.weight.grad[r, j] * w2.weight[r, j]) for r in range(D)))
            assert torch.allclose(score["intermediate.dense.weight"][j], torch.full((D,), hand_f), rtol=1e-5, atol=1e-6)
            assert score["intermediate.dense.bias"][j].item() == pytest.approx(hand_f, rel=1e-5, abs=1e-6)
            assert torch.allclose(score["output.dense.weight"][:, j], torch.full((D,), hand_f), rtol=1e-5, atol=1e-6)


def test_scores_are_an_exponential_moving_average():
    model, method = prepared(beta=0.5, alpha=0.0)
    set_unit_grads(method, model, query=2.0, value=4.0, ffn=8.0)
    method.after_backward(model)
    set_unit_grads(method, model, query=6.0, value=0.0, ffn=8.0)
    method.after_backward(model)
    # starts at zero: 0.5 * (0.5 * IS_1) + 0.5 * IS_2
    assert unit_score(method, model, 1, "query", 5) == pytest.approx(0.25 * 2 + 0.5 * 6, rel=1e-5, abs=1e-6)
    assert unit_score(method, model, 0, "value", 9) == pytest.approx(0.25 * 4 + 0.5 * 0, abs=1e-6)
    assert unit_score(method, model, 0, "ffn", 3) == pytest.approx(0.25 * 8 + 0.5 * 8, rel=1e-5, abs=1e-6)


def test_head_ffn_head_score_is_taylor_over_the_heads_output_columns():
    model, method = prepared(HeadFFNMethod, beta=0.0)
    gen = torch.Generator().manual_seed(4)
    for p in method.params.values():
        p.grad = torch.randn(p.shape, generator=gen)
    method.after_backward(model)
    model.requires_grad_(False)
    _, _, _, o, _, _ = layer_modules(model, 1)
    fqn = "bert.encoder.layer.1.attention.self.query.weight"
    score = method.score(fqn, model.get_parameter(fqn))
    for h in range(HEADS):
        cols = range(h * HEAD, (h + 1) * HEAD)
        hand = abs(sum(float(o.weight.grad[r, c] * o.weight[r, c]) for r in range(D) for c in cols))
        assert torch.allclose(score[h * HEAD:(h + 1) * HEAD], torch.full((HEAD, D), hand), rtol=1e-5, atol=1e-6)


def test_structreg_lowers_scores_in_thin_heads():
    def thin_then_rescore(alpha):
        model, method = prepared(beta=0.0, alpha=alpha)
        # value units 0..3 (half of head 0, layer 0) are the least important: prune exactly them
        set_unit_grads(method, model, value={(0, k): 0.01 for k in range(4)})
        method.after_backward(model)
        method.step((4 * V_COST - 0.5) / (2 * ENCODER_PER_LAYER))
        assert not method.masks["bert.encoder.layer.0.attention.self.value.weight"][:4].any()
        assert method.masks["bert.encoder.layer.0.attention.self.value.weight"][4:].all()
        set_unit_grads(method, model)  # now every unit has IS = 1
        method.after_backward(model)
        return [unit_score(method, model, 0, "value", k) for k in (4, 8)]  # head 0 vs head 1

    thin, full = thin_then_rescore(alpha=0.3)
    assert thin == pytest.approx(math.tanh(0.5 / 0.3), rel=1e-5, abs=1e-6)  # D = 4/8 left in head 0
    assert full == pytest.approx(math.tanh(1.0 / 0.3), rel=1e-5, abs=1e-6)
    assert thin < full
    assert thin_then_rescore(alpha=0.0) == pytest.approx([1.0, 1.0])  # alpha=0: StructReg off


# -------------------------------------------------------------------- gradient separation


def test_hidden_loss_gradient_does_not_enter_the_scores():
    teacher = tiny_bert(seed=1)
    student = tiny_bert(seed=0)
    twin = copy.deepcopy(student)
    batch = batch_of()
    with torch.no_grad():
        teacher_out = teacher(**batch, output_hidden_states=True)
    _, full = prepared(model=student)
    _, kd_only = prepared(model=twin)

    # The trial's step: task loss backward, then the loop's hooks (after_backward before the
    # extra loss's backward), without a weight update.
    out = student(**batch, output_hidden_states=True)
    loss = full.task_loss(out, batch, teacher_out)
    extra = full.extra_loss(out, batch, teacher_out)
    assert extra is not None and extra.item() > 0
    loss.backward(retain_graph=True)
    kd_grads = {}

    def extra_backward():
        kd_grads.update({n: p.grad.clone() for n, p in full.params.items()})
        extra.backward()

    method_step_hooks(full, student, step=0, total=100, schedule=None,
                      optimizer_step=lambda finite: None, extra_backward=extra_backward)
    assert kd_grads, "the extra loss's backward did not run"
    assert any(not torch.equal(kd_grads[n], p.grad) for n, p in full.params.items())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in full.extra_parameters())

    # The same student with the distillation loss alone.
    out = twin(**batch, output_hidden_states=True)
    kd_only.task_loss(out, batch, teacher_out).backward()
    kd_only.after_backward(twin)

    for fqn, p in full.params.items():
        assert torch.equal(full.score(fqn, p), kd_only.score(fqn, twin.get_parameter(fqn))), fqn

    # Had the scores been read after both backwards, they would differ: the test can fail.
    _, late = prepared(model=student)
    late.after_backward(student)
    assert any(
        not torch.allclose(late.score(f, p), kd_only.score(f, twin.get_parameter(f)))
        for f, p in late.params.items()
    )


def test_task_loss_is_soft_cross_entropy_at_temperature_without_hard_labels():
    _, method = prepared(temperature=2.0)

    class Out:
        def __init__(self, logits):
            self.logits = logits

    student = torch.tensor([[1.0, 0.0], [0.5, 2.0]])
    teacher = torch.tensor([[3.0, 1.0], [0.0, 0.0]])
    loss = method.task_loss(Out(student), {"labels": torch.tensor([1, 0])}, Out(teacher))
    hand = 0.0
    for s, t in zip(student.tolist(), teacher.tolist()):
        p_t = [math.exp(x / 2) / sum(math.exp(y / 2) for y in t) for x in t]
        log_p_s = [x / 2 - math.log(sum(math.exp(y / 2) for y in s)) for x in s]
        hand -= sum(a * b for a, b in zip(p_t, log_p_s))
    assert loss.item() == pytest.approx(hand / 2, rel=1e-6)  # labels play no part
    # regression: MSE to the teacher's output
    reg = method.task_loss(Out(torch.tensor([[1.0], [3.0]])), {}, Out(torch.tensor([[0.0], [1.0]])))
    assert reg.item() == pytest.approx((1 + 4) / 2)
    assert method.task_loss(Out(student), {}, None) is None  # no teacher: the model's own loss


def test_hidden_loss_layers_projections_and_padding():
    model, method = prepared(model=tiny_bert(layers=3))
    params = method.extra_parameters()
    assert len(params) == 2 * 3  # hidden states 0, 2 and the last (3): weight + bias each
    for weight in params[0::2]:
        assert torch.equal(weight, torch.eye(D))
    batch = batch_of()
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
        same = method.extra_loss(out, batch, out)
        assert same.item() == pytest.approx(0.0, abs=1e-12)  # identity start, same hidden states

        class Teacher:
            hidden_states = tuple(h.clone() for h in out.hidden_states)

        for h in Teacher.hidden_states:
            h[2, 2:] += 5.0  # only padded positions of sequence 2 change
        assert method.extra_loss(out, batch, Teacher).item() == pytest.approx(0.0, abs=1e-12)
        Teacher.hidden_states[2][0, 0] += 1.0  # a real token of a matched layer changes
        assert method.extra_loss(out, batch, Teacher).item() > 0
    _, no_hidden = prepared(hidden_loss_weight=0.0)
    assert no_hidden.extra_parameters() == []
    assert no_hidden.extra_loss(out, batch, out) is None


# ------------------------------------------------------------------------------- selection


def test_density_schedule_lands_on_target_counted_in_parameters():
    for cls, max_overshoot in ((GrainMethod, Q_COST + HEAD * Q_COST), (HeadFFNMethod, HEAD * (Q_COST + V_COST))):
        model, method = prepared(cls)
        total = sum(p.numel() for p in encoder_parameters(model).values())
        assert total == 2 * ENCODER_PER_LAYER
        schedule = SparsitySchedule(final_sparsity=0.8, **cls.schedule_defaults)
        gen = torch.Generator().manual_seed(0)
        steps, previous, requested = 50, None, []
        for t in range(steps):
            for p in method.params.values():
                p.grad = torch.randn(p.shape, generator=gen)
            method_step_hooks(method, model, step=t, total=steps, schedule=schedule,
                              optimizer_step=lambda finite: None)  # the loop's hooks, no weight update
            if schedule.should_update(t, steps):  # the hooks pruned to this step's sparsity
                sparsity = schedule.sparsity_at(t, steps)
                requested.append(sparsity)
                measured = zero_fraction_of_encoder(model)  # from the weights, in parameters
                assert sparsity <= measured < sparsity + max_overshoot / total, (cls, t)
                masks = {k: v.clone() for k, v in method.masks.items()}
                if previous is not None:  # masks only grow
                    assert not any((masks[k] & ~previous[k]).any() for k in masks)
                previous = masks
        assert requested[-1] == pytest.approx(0.8) and len(requested) > 5
        assert 1.0 - zero_fraction_of_encoder(model) == pytest.approx(0.2, abs=max_overshoot / total)


def test_masks_only_grow_when_scores_reverse():
    model, method = prepared(beta=0.0, alpha=0.0)
    gen = torch.Generator().manual_seed(1)
    for p in method.params.values():
        p.grad = torch.randn(p.shape, generator=gen)
    method.after_backward(model)
    method.step(0.3)
    first = {k: v.clone() for k, v in method.masks.items()}
    # make the pruned units the most important ones now
    pruned_ffn = ~first["bert.encoder.layer.0.intermediate.dense.bias"]
    assert pruned_ffn.any()
    set_unit_grads(method, model, ffn={(0, j): 100.0 for j in pruned_ffn.nonzero().flatten().tolist()})
    method.after_backward(model)
    method.step(0.5)
    for fqn, mask in method.masks.items():
        assert not (mask & ~first[fqn]).any(), fqn
    with torch.no_grad():  # an optimizer step would write into pruned entries; apply_masks zeroes them
        for p in method.params.values():
            p.add_(1.0)
    method.apply_masks()
    for fqn, p in method.params.items():
        assert (p[~method.masks[fqn]] == 0).all()
    assert zero_fraction_of_encoder(model) >= 0.5


def test_head_without_value_units_loses_its_query_units():
    model, method = prepared(beta=0.0, alpha=0.0)
    head2 = range(2 * HEAD, 3 * HEAD)
    set_unit_grads(
        method, model,
        value={(0, k): 0.01 for k in head2},
        query={(0, k): 100.0 for k in head2},  # its query units are the most important of all
    )
    method.after_backward(model)
    method.step((HEAD * V_COST - 0.5) / (2 * ENCODER_PER_LAYER))  # exactly the 8 value units
    prefix = "bert.encoder.layer.0.attention.self."
    for name in ("query.weight", "query.bias", "key.weight", "key.bias", "value.weight", "value.bias"):
        mask = method.masks[prefix + name]
        assert not mask[2 * HEAD:3 * HEAD].any(), name
        assert mask[:2 * HEAD].all() and mask[3 * HEAD:].all(), name
    assert zero_fraction_of_encoder(model) == pytest.approx(HEAD * (V_COST + Q_COST) / (2 * ENCODER_PER_LAYER))
    layout, _ = read_pruned_layout(model)  # what the export will keep, read from the zeros
    assert layout[0]["query_units"] == [8, 8, 0, 8]
    small = method.finalize()
    assert small.config.pruned_layout[0]["value_units"] == [8, 8, 0, 8]
    assert small.config.pruned_layout[0]["query_units"] == [8, 8, 0, 8]
    assert small.bert.encoder.layer[0].attention.self.num_heads == 3


def test_head_ffn_removes_whole_heads():
    model, method = prepared(HeadFFNMethod, beta=0.0)
    gen = torch.Generator().manual_seed(2)
    for p in method.params.values():
        p.grad = torch.randn(p.shape, generator=gen)
    method.after_backward(model)
    method.step(0.5)
    removed_heads = 0
    for i in range(2):
        prefix = f"bert.encoder.layer.{i}."
        rows = {name: method.masks[prefix + name] for name in (
            "attention.self.query.weight", "attention.self.key.weight", "attention.self.value.weight")}
        out_cols = method.masks[prefix + "attention.output.dense.weight"]
        for h in range(HEADS):
            block = [rows[n][h * HEAD:(h + 1) * HEAD] for n in rows] + [out_cols[:, h * HEAD:(h + 1) * HEAD]]
            flags = torch.cat([b.reshape(-1) for b in block])
            assert flags.all() or not flags.any()  # a head is whole or gone
            removed_heads += int(not flags.any())
    assert removed_heads > 0
    small = method.finalize()
    layout = small.config.pruned_layout
    for layer in layout:
        assert all(q == v and v in (0, HEAD) for q, v in zip(layer["query_units"], layer["value_units"]))


# ------------------------------------------------------------------- state and finalisation


def test_state_dict_round_trip():
    model, method = prepared()
    pristine = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(5)
    for p in method.params.values():
        p.grad = torch.randn(p.shape, generator=gen)
    method.after_backward(model)
    method.step(0.4)
    with torch.no_grad():
        for p in method.extra_parameters():
            p.add_(0.5)
    state = method.state_dict()
    _, again = prepared(model=pristine)
    again.load_state_dict(state)
    for fqn in method.masks:
        assert torch.equal(method.masks[fqn], again.masks[fqn])
        assert torch.equal(method.score(fqn, method.params[fqn]), again.score(fqn, again.params[fqn]))
        assert torch.equal(method.params[fqn], again.params[fqn])  # masks applied on load
    for a, b in zip(method.extra_parameters(), again.extra_parameters()):
        assert torch.equal(a, b)
    assert read_pruned_layout(again.model)[0] == read_pruned_layout(method.model)[0]


def test_same_scores_give_identical_masks():
    masks = []
    for _ in range(2):
        model, method = prepared()
        gen = torch.Generator().manual_seed(6)
        for p in method.params.values():
            p.grad = torch.randn(p.shape, generator=gen)
        method.after_backward(model)
        method.step(0.6)
        masks.append(method.masks)
    assert all(torch.equal(masks[0][k], masks[1][k]) for k in masks[0])


def prune_and_run(model, method, sparsity: float, seed: int) -> tuple[dict, torch.Tensor]:
    """Score with random gradients, prune to ``sparsity`` and return (a batch, the masked model's
    logits on it)."""
    gen = torch.Generator().manual_seed(seed)
    for p in method.params.values():
        p.grad = torch.randn(p.shape, generator=gen)
    method.after_backward(model)
    method.step(sparsity)
    batch = {k: v for k, v in batch_of(seed).items() if k != "labels"}
    with torch.no_grad():
        return batch, model(**batch).logits


def test_finalize_returns_a_smaller_model_with_the_same_outputs():
    model, method = prepared()
    batch, masked = prune_and_run(model, method, 0.7, seed=1)
    dense_count = sum(p.numel() for p in model.parameters())
    zeros = sum(int((p == 0).sum()) for p in model.parameters())
    small = method.finalize().eval()
    assert sorted(small.state_dict()) == sorted(model.state_dict())  # same keys, smaller shapes
    assert sum(p.numel() for p in small.parameters()) == dense_count - zeros
    with torch.no_grad():
        shrunk = small(**batch).logits
    assert torch.allclose(shrunk, masked, atol=1e-5)
    assert method.params == {}


def test_embedding_factorisation_before_training_and_in_the_export():
    """embedding_rank r: prepare swaps the word table for its rank-r SVD factors (so the trial's
    optimizer, built after prepare, trains them), and the export keeps them."""
    from rayprune.methods.structured.models import FactorizedEmbedding

    dense = tiny_bert()
    full = sum(p.numel() for p in dense.parameters())
    model, method = prepared(model=copy.deepcopy(dense), embedding_rank=8)
    words = model.get_input_embeddings()
    assert isinstance(words, FactorizedEmbedding) and words.rank == 8
    assert sum(p.numel() for p in model.parameters()) == full - 100 * D + (100 * 8 + 8 * D)
    trained = {id(p) for p in model.parameters()}
    assert id(words.codes.weight) in trained and id(words.projection.weight) in trained
    # Embeddings are not encoder parameters: the schedule's density is unchanged by EF.
    _, plain = prepared(model=copy.deepcopy(dense))
    assert method._encoder_total == plain._encoder_total
    batch, masked = prune_and_run(model, method, 0.6, seed=2)
    small = method.finalize().eval()
    assert small.config.embedding_rank == 8
    with torch.no_grad():
        shrunk = small(**batch).logits
    assert torch.allclose(shrunk, masked, atol=1e-5)


@pytest.mark.parametrize("rank", [-1, 1.5, True])
def test_embedding_rank_must_be_a_non_negative_int(rank):
    with pytest.raises(ValueError, match="embedding_rank"):
        GrainMethod(embedding_rank=rank)
