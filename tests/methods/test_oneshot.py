"""Wanda and SparseGPT: the papers' known cases on one linear layer, and the layer-by-layer
calibration pass (inputs from the already pruned blocks, padding left out, no hook left behind,
when it runs in a trial)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rayprune.methods import SparsitySchedule, TrainingContext, get_method
from rayprune.methods import masks as M
from rayprune.methods.sparsegpt import sparsegpt_prune
from rayprune.methods.wanda import wanda_scores
from rayprune.models import prunable_targets


# ------------------------------------------------------------------------------ one layer
def _layer(seed: int, out: int = 64, inp: int = 128, tokens: int = 512):
    """A random weight and correlated inputs whose features differ in scale (as activations do)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, generator=gen)
    mix = torch.eye(inp) + 0.3 * torch.randn(inp, inp, generator=gen) / inp**0.5
    x = torch.randn(tokens, inp, generator=gen) @ mix * torch.exp(torch.randn(inp, generator=gen))
    return w, x  # (out, in), (tokens, in)


def _error(w, w_hat, x) -> float:
    return float(torch.linalg.norm(x @ w.T - x @ w_hat.T))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reconstruction_error_sparsegpt_below_wanda_below_magnitude(seed):
    w, x = _layer(seed)
    cols = w.shape[1]
    magnitude = w * M.keep_top_in_groups(w.abs(), cols, cols // 2)
    wanda = w * M.keep_top_in_groups(wanda_scores(w, x.norm(dim=0)), cols, cols // 2)
    sparsegpt, keep, _ = sparsegpt_prune(w, 2 * x.T @ x / x.shape[0], 0.5, blocksize=32)
    for pruned in (magnitude, wanda, sparsegpt):
        assert float((pruned == 0).float().mean()) == 0.5
    assert not sparsegpt[~keep].any()
    assert _error(w, sparsegpt, x) < _error(w, wanda, x) < _error(w, magnitude, x)


def test_sparsegpt_two_four_holds_the_pattern_and_beats_projected_magnitude():
    w, x = _layer(3)
    new, keep, _ = sparsegpt_prune(w, 2 * x.T @ x / x.shape[0], 0.5, nm=(2, 4), blocksize=30)  # 30 -> 28
    assert M.nm_violations(new, 2, 4) == 0
    assert torch.equal(keep.reshape(-1, 4).sum(1), torch.full((w.numel() // 4,), 2))
    assert _error(w, new, x) < _error(w, w * M.nm_keep(w.abs(), 2, 4), x)


def test_sparsegpt_with_uncorrelated_unit_inputs_is_magnitude_without_updates():
    """H = 2I: no correlation to compensate, every column's saliency is w² up to one constant."""
    w, _ = _layer(4, out=16, inp=32)
    new, keep, _ = sparsegpt_prune(w, 2 * torch.eye(32), 0.5, blocksize=32)
    expected = M.select_lowest_k_per_tensor({"w": w.abs()}, 0.5)["w"]
    assert torch.equal(keep, expected)
    assert torch.allclose(new, w * expected, atol=1e-5)


# ------------------------------------------------------------------------------ tiny encoders
class _Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, width)

    def forward(self, hidden, attention_mask=None):
        return (torch.tanh(self.dense(hidden)),)  # a tuple, as older transformers blocks return


class _Encoder(nn.Module):
    """``input_ids`` are float features here: (batch, seq, width) straight into two blocks."""

    def __init__(self, width: int = 16, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.layer = nn.ModuleList([_Block(width), _Block(width)])

    def forward(self, input_ids, attention_mask=None):
        hidden = input_ids
        for block in self.layer:
            hidden = block(hidden, attention_mask)[0]
        return hidden


def _context(batches, *, kind="oneshot", start=0.0, total=4, resuming=False, record=None):
    def calibration(samples, seed):
        if record is not None:
            record.append((samples, seed))
        yield from batches

    schedule = SparsitySchedule(final_sparsity=0.5, kind=kind, start=start)
    return TrainingContext(total_steps=total, schedule=schedule, seed=7, resuming=resuming,
                           calibration_batches=calibration)


def _features(seed, *, equal_norms=False, width=16, tokens=(6, 10)):
    gen = torch.Generator().manual_seed(seed)
    if equal_norms:  # every feature's norm over the tokens is sqrt(tokens)
        x = torch.randint(0, 2, (*tokens, width), generator=gen).float() * 2 - 1
    else:
        x = torch.randn(*tokens, width, generator=gen) * torch.linspace(0.1, 5.0, width)
    return {"input_ids": x, "attention_mask": torch.ones(tokens, dtype=torch.long)}


@pytest.mark.parametrize("equal_norms", [True, False])
def test_wanda_equals_magnitude_exactly_when_every_input_feature_has_the_same_norm(equal_norms):
    batch = _features(0, equal_norms=equal_norms)
    targets = ["layer.0.dense.weight"]  # the first block's inputs are the features themselves
    wanda_model, magnitude_model = _Encoder(), _Encoder()
    wanda = get_method("wanda")(selection="layer")
    wanda.prepare(wanda_model, targets, _context([batch]))  # prunes here (start 0)
    magnitude = get_method("magnitude")(selection="layer")
    magnitude.prepare(magnitude_model, targets, _context([batch], kind="cubic"))
    magnitude.step(0.5)
    same = torch.equal(wanda.masks[targets[0]], magnitude.masks[targets[0]])
    assert same == equal_norms


def test_each_block_sees_the_outputs_of_the_pruned_blocks_before_it():
    batch = _features(1)
    model, dense = _Encoder(seed=3), _Encoder(seed=3)
    wanda = get_method("wanda")()
    wanda.prepare(model, ["layer.0.dense.weight", "layer.1.dense.weight"], _context([batch]))
    with torch.no_grad():
        pruned_in = model.layer[0](batch["input_ids"])[0].reshape(-1, 16)
        dense_in = dense.layer[0](batch["input_ids"])[0].reshape(-1, 16)
    norms = wanda._stats_kept["layer.1.dense.weight"]
    assert torch.allclose(norms, pruned_in.norm(dim=0), rtol=1e-5)
    assert not torch.allclose(norms, dense_in.norm(dim=0), rtol=1e-3)


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("name", ["wanda", "sparsegpt"])
def test_the_pass_prunes_a_bert_and_leaves_no_hook(name, make_tiny_bert, tiny_batch):
    model = make_tiny_bert()
    inputs = {k: v for k, v in tiny_batch.items() if k != "labels"}
    record = []
    method = get_method(name)(calibration_samples=4)
    targets = prunable_targets(model, method.default_scope)
    method.prepare(model, targets, _context([inputs], record=record))
    assert record == [(4, 7)]  # calibration_samples and the trial's seed
    assert _no_hooks(model) and model.training  # mode restored
    for fqn, mask in method.masks.items():
        assert abs(int((~mask).sum()) - mask.numel() / 2) <= 1
        assert not dict(model.named_parameters())[fqn][~mask].any()
    diag = method.diagnostics()
    assert diag["calibration_samples_seen"] == 4 and diag["oneshot_seconds"] > 0
    if name == "sparsegpt":
        assert 0 < diag["reconstruction_error"] < 1


def test_hooks_are_removed_when_the_pass_fails(make_tiny_bert, tiny_batch):
    class Failing(get_method("sparsegpt")):
        def _accumulate(self, stats, x):  # fails inside a block, with its hooks registered
            raise RuntimeError("statistics failed")

    model = make_tiny_bert()
    inputs = {k: v for k, v in tiny_batch.items() if k != "labels"}
    with pytest.raises(RuntimeError, match="statistics failed"):
        Failing().prepare(model, prunable_targets(model, "encoder_linear"), _context([inputs]))
    assert _no_hooks(model) and model.training


def test_padding_tokens_do_not_enter_the_statistics(make_tiny_bert, tiny_batch):
    inputs = {k: v for k, v in tiny_batch.items() if k != "labels"}
    other = dict(inputs, input_ids=inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, 57))
    masks = []
    for batch in (inputs, other):
        model = make_tiny_bert()
        method = get_method("wanda")()
        method.prepare(model, prunable_targets(model, "encoder_linear"), _context([batch]))
        masks.append(method.masks)
    for fqn in masks[0]:
        assert torch.equal(masks[0][fqn], masks[1][fqn]), fqn


def test_when_the_pass_runs(make_tiny_bert, tiny_batch):
    inputs = {k: v for k, v in tiny_batch.items() if k != "labels"}
    model = make_tiny_bert()
    targets = prunable_targets(model, "encoder_linear")
    # start > 0: nothing in prepare, the pass at the schedule's one masking step.
    later = get_method("wanda")()
    later.prepare(model, targets, _context([inputs], start=0.5, total=4))
    assert all(m.all() for m in later.masks.values())
    later.step(0.5)
    assert all(abs(float((~m).float().mean()) - 0.5) < 1e-6 for m in later.masks.values())
    # Resuming: the checkpoint brings weights and masks; no pass.
    resumed = get_method("wanda")()
    resumed.prepare(make_tiny_bert(), targets, _context([inputs], resuming=True))
    assert all(m.all() for m in resumed.masks.values())
    # No calibration data: one clear error.
    with pytest.raises(ValueError, match="calibration_batches is None"):
        get_method("wanda")().prepare(make_tiny_bert(), targets,
                                      TrainingContext(total_steps=4, schedule=SparsitySchedule(
                                          final_sparsity=0.5, kind="oneshot", start=0.0)))
    with pytest.raises(ValueError, match="schedule.kind"):
        get_method("sparsegpt")().prepare(make_tiny_bert(), targets, _context([inputs], kind="cubic"))
