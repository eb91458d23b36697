"""RPP: proximal soft threshold, reweighting, mask from exact zeros, mlm stage (SPEC §6)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rayprune.methods import get_method
from rayprune.methods.base import TrainingContext
from rayprune.methods.rpp import RPPMethod, RPPOptions, soft_threshold_
from rayprune.methods.schedules import SparsitySchedule
from rayprune.training.loop import method_step_hooks

transformers = pytest.importorskip("transformers")

# Hand case (all numbers dyadic, so results are exact in float32): eps = 0.25 gives
# alpha = 1/(|w| + 0.25); lr = 0.125 and lam = 0.5 give a threshold of 0.0625 * alpha.
#   |w| = 0.75  -> alpha 1   -> threshold 0.0625  -> 0.6875
#   |w| = 1.75  -> alpha 0.5 -> threshold 0.03125 -> 1.71875
#   |w| = 0.25  -> alpha 2   -> threshold 0.125   -> 0.125
#   |w| = 0.125 -> threshold 0.0625/0.375 = 0.1667 >= 0.125 -> exactly 0
#   |w| = 0.0625, 0 -> exactly 0
_W = [[0.75, -0.75, 1.75, -0.25], [0.125, -0.0625, 0.0, 0.25]]
_AFTER = [[0.6875, -0.6875, 1.71875, -0.125], [0.0, 0.0, 0.0, 0.125]]
_OPTS = {"lam": 0.5, "eps": 0.25}


class _OneLinear(nn.Module):
    def __init__(self, weight) -> None:
        super().__init__()
        weight = torch.as_tensor(weight, dtype=torch.float32)
        self.lin = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        with torch.no_grad():
            self.lin.weight.copy_(weight)


def _prepared(weight=_W, *, total_steps=100, lr=0.125, schedule=None, **options):
    model = _OneLinear(weight)
    ctx = TrainingContext(total_steps=total_steps, learning_rate=lr, schedule=schedule)
    method = RPPMethod(**{**_OPTS, **options})
    method.prepare(model, ["lin.weight"], ctx)
    return model, method, ctx


def _tiny_bert(vocab_size=100, seed=0):
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, num_labels=2,
    )
    return transformers.BertForSequenceClassification(config)


def test_registry_resolves_rpp():
    assert get_method("rpp") is RPPMethod


def test_soft_threshold_exact_zeros_and_exact_shrink():
    w = torch.tensor([0.5, -0.5, 0.25, -0.375, 0.0])
    t = torch.tensor([0.5, 0.25, 0.5, 0.125, 0.125])
    soft_threshold_(w, t)
    # |w| <= t (including |w| == t) -> exactly 0; otherwise shrunk by exactly t toward 0.
    assert w.tolist() == [0.0, -0.25, 0.0, -0.25, 0.0]


def test_proximal_step_by_hand():
    model, method, _ = _prepared()
    method.after_optimizer_step(model)
    assert model.lin.weight.detach().tolist() == _AFTER
    assert torch.equal(method.alpha["lin.weight"], 1.0 / (torch.tensor(_W).abs() + 0.25))
    # The prox makes zeros but fixes no mask: the masks are untouched until step().
    assert bool(method.masks["lin.weight"].all())


def test_reweighting_refresh_period():
    model, method, ctx = _prepared(lr=0.0, reweight_interval=3)
    w0 = torch.tensor(_W)
    w1 = torch.full_like(w0, 0.75)  # alpha would be exactly 1 everywhere
    method.after_optimizer_step(model)  # step 0: refresh from w0
    with torch.no_grad():
        model.lin.weight.copy_(w1)
    for ctx.step in (1, 2):
        method.after_optimizer_step(model)
        assert torch.equal(method.alpha["lin.weight"], 1.0 / (w0.abs() + 0.25))
    ctx.step = 3
    method.after_optimizer_step(model)
    assert torch.equal(method.alpha["lin.weight"], torch.ones_like(w0))


def test_prox_uses_stale_alpha_between_refreshes():
    model, method, ctx = _prepared(reweight_interval=10, lr=0.0)
    method.after_optimizer_step(model)  # alpha from _W at step 0
    with torch.no_grad():
        model.lin.weight.fill_(0.75)
    ctx.step, ctx.learning_rate = 1, 0.125
    method.after_optimizer_step(model)
    # threshold = 0.0625 * alpha(_W), not 0.0625 * alpha(0.75) = 0.0625 everywhere.
    want = 0.75 - 0.0625 / (torch.tensor(_W).abs() + 0.25)
    assert torch.equal(model.lin.weight.detach(), want.clamp(min=0))


def test_final_mask_is_exactly_the_zeros_when_they_exceed_the_target():
    model, method, _ = _prepared()
    method.after_optimizer_step(model)  # three exact zeros of eight = 0.375
    sparsities = method.step(0.25)
    assert torch.equal(method.masks["lin.weight"], torch.tensor(_AFTER) != 0)
    assert sparsities["lin.weight"] == pytest.approx(0.375)  # measured, above the target


def test_gap_to_the_target_is_closed_by_magnitude():
    model, method, _ = _prepared()
    method.after_optimizer_step(model)
    method.step(0.625)  # 3 zeros + the 2 smallest survivors (|-0.125|, |0.125|)
    want = torch.tensor([[True, True, True, False], [False, False, False, False]])
    assert torch.equal(method.masks["lin.weight"], want)


# The paper's literal order: prox for the whole phase, one hard prune at its end (70 %).
ONE_SHOT = {"kind": "constant", "start": 0.7, "end": 0.7, "interval": 1}


def test_prox_stops_after_the_mask_is_fixed():
    schedule = SparsitySchedule(final_sparsity=0.5, **ONE_SHOT)
    model, method, ctx = _prepared(total_steps=10, schedule=schedule)
    assert schedule.steps(10) == (7, 7)
    ctx.step = 7  # the masking step itself still gets the prox
    method.after_optimizer_step(model)
    assert model.lin.weight.detach().tolist() == _AFTER
    method.step(schedule.sparsity_at(7, 10))
    before = model.lin.weight.detach().clone()
    ctx.step = 8
    method.after_optimizer_step(model)
    assert torch.equal(model.lin.weight.detach(), before)


def test_one_shot_schedule_fixes_the_mask_once_at_the_end_of_the_pruning_phase():
    schedule = SparsitySchedule(final_sparsity=0.8, **ONE_SHOT)
    updates = [t for t in range(100) if schedule.should_update(t, 100)]
    assert updates == [70]
    assert schedule.sparsity_at(70, 100) == pytest.approx(0.8)


def test_default_schedule_is_gradual_and_the_prox_runs_to_the_ramp_end():
    schedule = SparsitySchedule(final_sparsity=0.5, **RPPMethod.schedule_defaults)
    assert schedule.kind == "cubic"
    first, last = schedule.steps(100)
    model, method, ctx = _prepared(total_steps=100, schedule=schedule)
    ctx.step = last  # the last masking event still gets the prox ...
    method.after_optimizer_step(model)
    assert model.lin.weight.detach().tolist() == _AFTER
    method.step(0.5)
    before = model.lin.weight.detach().clone()
    ctx.step = last + 1  # ... and nothing after it
    method.after_optimizer_step(model)
    assert torch.equal(model.lin.weight.detach(), before)


def test_diagnostics_split_the_pruned_set_between_prox_and_magnitude():
    model, method, _ = _prepared()
    assert method.diagnostics() == {"prox_pruned": 0.0, "magnitude_pruned": 0.0}
    method.after_optimizer_step(model)  # 3 of 8 entries become exact zeros
    method.step(0.625)  # those 3, then 2 by magnitude
    assert method.diagnostics() == {"prox_pruned": 3 / 8, "magnitude_pruned": 2 / 8}
    restored = RPPMethod()
    restored.prepare(model, ["lin.weight"], method.context)
    restored.load_state_dict(method.state_dict())
    assert restored.diagnostics() == method.diagnostics()


def test_training_loop_mask_equals_zeros_at_the_decision_step():
    model = _tiny_bert()
    from rayprune.models import prunable_targets

    targets = prunable_targets(model)
    schedule = SparsitySchedule(final_sparsity=0.3, **ONE_SHOT)
    total = 10
    ctx = TrainingContext(total_steps=total, learning_rate=1e-2, schedule=schedule)
    # Large lam so the prox zeroes more than 30 % within 7 steps on this tiny model.
    method = RPPMethod(lam=0.2, eps=1e-3, reweight_interval=2)
    method.prepare(model, targets, ctx)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    decide = method.step
    decisions = []

    def checked_step(sparsity):  # the masking decision, called by the loop's hooks when due
        zeros = {t: (method.params[t] == 0).clone() for t in targets}
        measured = decide(sparsity)
        for t in targets:
            assert torch.equal(~method.masks[t], zeros[t])
        total_zeros = sum(int(z.sum()) for z in zeros.values())
        assert total_zeros / sum(z.numel() for z in zeros.values()) > 0.3
        assert measured == pytest.approx({t: float(zeros[t].float().mean()) for t in targets})
        decisions.append(ctx.step)
        return measured

    method.step = checked_step

    def optimizer_step(finite):
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    gen = torch.Generator().manual_seed(0)
    for step in range(total):
        ctx.step = step
        ids = torch.randint(0, 100, (4, 8), generator=gen)
        loss = model(input_ids=ids, labels=torch.tensor([0, 1, 0, 1])).loss
        loss.backward()
        method_step_hooks(method, model, step=step, total=total, schedule=schedule,
                          optimizer_step=optimizer_step)
    assert decisions == [7]  # the one-shot decision step ran, with the checks above
    for t in targets:  # pruned entries stayed zero through the fixed-mask fine-tuning
        assert bool((method.params[t][~method.masks[t]] == 0).all())


def test_state_dict_round_trip_restores_alpha():
    model = _tiny_bert()
    from rayprune.models import prunable_targets

    targets = prunable_targets(model)
    ctx = TrainingContext(total_steps=10, learning_rate=1e-3)
    method = RPPMethod()
    method.prepare(model, targets, ctx)
    method.after_optimizer_step(model)
    method.step(0.5)
    state = method.state_dict()
    assert set(state["alpha"]) == set(targets)

    other = RPPMethod()
    other.prepare(_tiny_bert(seed=1), targets, ctx)
    other.load_state_dict(state)
    for t in targets:
        assert torch.equal(other.alpha[t], method.alpha[t])
        assert torch.equal(other.masks[t], method.masks[t])


@pytest.mark.parametrize(
    "options, match",
    [
        ({"lam": -1.0}, "lam"),
        ({"eps": 0.0}, "eps"),
        ({"reweight_interval": 0}, "reweight_interval"),
        ({"stage": "pretrain"}, "stage"),
        ({"mlm_probability": 1.0}, "mlm_probability"),
    ],
)
def test_invalid_options_raise(options, match):
    with pytest.raises(ValueError, match=match):
        RPPOptions(**options)
    with pytest.raises(TypeError, match="reweight_interval"):
        RPPOptions(reweight_interval=2.5)


# ---------------------------------------------------------------------- mlm stage
_WORDS = (
    "the a movie film plot acting music story is was not very too quite good bad great "
    "awful fun dull slow funny sad long short and but"
).split()
_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _tiny_tokenizer():
    vocab = {tok: i for i, tok in enumerate(_SPECIAL + _WORDS)}
    return transformers.BertTokenizer(vocab=vocab)


def _texts(n=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [
        " ".join(_WORDS[i] for i in torch.randint(0, len(_WORDS), (9,), generator=gen).tolist())
        for _ in range(n)
    ]


def _mlm_run(target, **options):
    from rayprune.models import prunable_targets

    tokenizer = _tiny_tokenizer()
    model = _tiny_bert(vocab_size=len(tokenizer))
    targets = prunable_targets(model)
    schedule = SparsitySchedule(final_sparsity=target, **RPPMethod.schedule_defaults)
    ctx = TrainingContext(
        total_steps=20, schedule=schedule, tokenizer=tokenizer, unlabeled_texts=_texts(),
        max_seq_length=16, learning_rate=5e-5,
    )
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    method = RPPMethod(stage="mlm", mlm_steps=6, mlm_batch_size=8, mlm_head_warmup_steps=2,
                       **options)
    method.prepare(model, targets, ctx)
    return model, method, ctx, targets, before


def test_mlm_stage_trains_the_shared_encoder_and_fixes_the_mask_at_the_target():
    model, method, ctx, targets, before = _mlm_run(0.5, lam=1e-2, mlm_learning_rate=1e-2)
    total = sum(method.params[t].numel() for t in targets)
    pruned = sum(int((~method.masks[t]).sum()) for t in targets)
    assert pruned == round(0.5 * total)
    after = model.state_dict()
    for t in targets:
        # The classifier's own encoder holds the pruned, MLM-trained weights.
        assert method.params[t] is model.get_parameter(t)
        assert bool((after[t][~method.masks[t]] == 0).all())
        assert not torch.equal(after[t], before[t])
    # Non-prunable encoder weights were trained by the MLM loss too (the module is shared) ...
    assert not torch.equal(after["bert.embeddings.word_embeddings.weight"],
                           before["bert.embeddings.word_embeddings.weight"])
    assert not torch.equal(after["bert.encoder.layer.0.output.LayerNorm.weight"],
                           before["bert.encoder.layer.0.output.LayerNorm.weight"])
    # ... while the classification head was not part of the stage.
    assert torch.equal(after["classifier.weight"], before["classifier.weight"])
    # No MLM head was added to the classifier.
    assert set(after) == set(before)
    assert method.alpha == {}  # freed: fine-tuning needs no alpha


def test_mlm_stage_trims_extra_zeros_to_the_target_and_then_keeps_the_mask():
    # A huge lam zeroes far more than 20 %: the mask is trimmed back to exactly 20 %.
    model, method, ctx, targets, _ = _mlm_run(0.2, lam=50.0, mlm_learning_rate=1e-2)
    zeros = sum(int((method.params[t] == 0).sum()) for t in targets)
    total = sum(method.params[t].numel() for t in targets)
    pruned = sum(int((~method.masks[t]).sum()) for t in targets)
    assert zeros > 0.5 * total
    assert pruned == round(0.2 * total)
    masks = {t: m.clone() for t, m in method.masks.items()}
    # Fine-tuning: no prox, and the schedule's step keeps the mask as it is.
    ctx.learning_rate, ctx.step = 1.0, 14
    weights = {t: method.params[t].detach().clone() for t in targets}
    method.after_optimizer_step(model)
    assert all(torch.equal(method.params[t], weights[t]) for t in targets)
    method.step(0.2)
    assert all(torch.equal(method.masks[t], masks[t]) for t in targets)
    assert method.state_dict()["mask_fixed"] is True


def test_mlm_stage_needs_the_task_text():
    model = _tiny_bert()
    from rayprune.models import prunable_targets

    ctx = TrainingContext(
        total_steps=10, schedule=SparsitySchedule(final_sparsity=0.5), tokenizer=_tiny_tokenizer()
    )
    with pytest.raises(ValueError, match="unlabeled_texts"):
        RPPMethod(stage="mlm").prepare(model, prunable_targets(model), ctx)


def test_saved_alpha_is_not_changed_by_later_refreshes():
    model, method, ctx = _prepared(reweight_interval=1)
    method.after_optimizer_step(model)  # step 0: the prox changes the weights
    state = method.state_dict()
    saved = state["alpha"]["lin.weight"].clone()
    ctx.step = 1
    method.after_optimizer_step(model)  # refreshes alpha in place from the new weights
    assert not torch.equal(method.alpha["lin.weight"], saved)
    assert torch.equal(state["alpha"]["lin.weight"], saved)
