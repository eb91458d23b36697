"""N:M sparsity patterns (``<method>.sparsity_pattern``): the pure selection maths, and every
unstructured method reaching an exact N:M mask through its own ramp."""

from __future__ import annotations

import pytest
import torch

from rayprune.methods import SparsitySchedule, TrainingContext, available_methods, get_method
from rayprune.methods import masks as M
from rayprune.models import prunable_targets
from rayprune.training.loop import method_step_hooks

GRADUAL = [n for n in available_methods() if not get_method(n).structured and not get_method(n).one_shot]
ONE_SHOT = [n for n in available_methods() if get_method(n).one_shot]
STEPS = 6
# RPP's proximal step zeroes weights outside any selection (they become pruned), so its groups
# may hold fewer than N: at most N non-zeros still holds, "exactly N" does not.
PROX_ZEROES = {"rpp"}


# ------------------------------------------------------------------------------ pure maths
def test_parse_patterns():
    assert M.parse_sparsity_pattern("unstructured") is None
    assert M.parse_sparsity_pattern("2:4") == (2, 4)
    assert M.parse_sparsity_pattern("4:8") == (4, 8)
    assert M.parse_sparsity_pattern("1:3") == (1, 3)
    for bad in ("4:2", "2:2", "0:4", "2:4:8", " 2:4", "a:b", ""):
        with pytest.raises(ValueError, match="N:M"):
            M.parse_sparsity_pattern(bad)
    with pytest.raises(TypeError, match="quote it: '2:4'"):
        M.parse_sparsity_pattern(124)  # YAML's reading of an unquoted 2:4


def test_nm_keep_keeps_the_top_n_of_every_group():
    score = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.0, 9.0, 8.0, 7.0]])
    assert M.nm_keep(score, 2, 4).tolist() == [[True, False, True, False, False, True, True, False]]
    assert M.nm_keep(score, 1, 4).tolist() == [[True, False, False, False, False, True, False, False]]
    gen = torch.Generator().manual_seed(0)
    big = torch.randn(48, 64, generator=gen)
    keep = M.nm_keep(big, 2, 4)
    assert torch.equal(keep.reshape(-1, 4).sum(1), torch.full((48 * 16,), 2))
    assert M.nm_violations(big * keep, 2, 4) == 0
    # The kept ones are the largest of their group.
    groups, kept = big.reshape(-1, 4), keep.reshape(-1, 4)
    assert (groups[kept].reshape(-1, 2).min(1).values >= groups[~kept].reshape(-1, 2).max(1).values).all()


def test_nm_violations_counts_groups_with_more_than_n_nonzeros():
    w = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    assert M.nm_violations(w, 2, 4) == 2
    assert M.nm_violations(w, 3, 4) == 1
    assert M.nm_violations(w, 4, 8) == 1  # row 0 holds 5 of 8


def test_a_protected_ramp_stays_compatible_and_ends_exactly_nm():
    gen = torch.Generator().manual_seed(1)
    scores = {"a": torch.randn(32, 64, generator=gen), "b": torch.randn(16, 32, generator=gen) * 3}
    keep = {k: torch.ones_like(s, dtype=torch.bool) for k, s in scores.items()}
    for sparsity in (0.1, 0.3, 0.45, 0.5):
        protected = {k: M.protect_top_n_of_m(s.masked_fill(~keep[k], float("-inf")), 2, 4)
                     for k, s in scores.items()}
        new = M.select_lowest_k_global(protected, sparsity)
        for k in keep:
            keep[k] &= new[k]
            per_group = keep[k].reshape(-1, 4).sum(1)
            assert (per_group >= 2).all(), f"a group fell below N at {sparsity}"
    for k, s in scores.items():
        assert torch.equal(keep[k], M.nm_keep(s.masked_fill(~keep[k], float("-inf")), 2, 4))
        assert int(keep[k].sum()) == s.numel() // 2


def test_unfit_shapes_and_the_list_of_layers_left_dense():
    assert M.nm_unfit_reason((64, 32), 4) is None
    assert "multiple of M=8" in M.nm_unfit_reason((64, 36), 8)
    assert "multiple of 16" in M.nm_unfit_reason((40, 32), 4)  # the GPU kernel's rule
    assert "2-D" in M.nm_unfit_reason((32,), 4)
    shapes = {"q.weight": (32, 32), "ffn.weight": (72, 32), "out.weight": (32, 72)}
    assert M.layers_left_dense(shapes, "unstructured") == {}
    assert set(M.layers_left_dense(shapes, "2:4")) == {"ffn.weight", "out.weight"}


def test_pattern_target_check():
    M.check_pattern_target("2:4", 0.5)
    M.check_pattern_target("1:3", 0.6667)
    M.check_pattern_target("unstructured", 0.93)
    with pytest.raises(ValueError, match="must be 0.5"):
        M.check_pattern_target("4:8", 0.7)


def test_which_patterns_torchs_gpu_kernel_runs():
    assert M.gpu_kernel_accepts(2, 4) and M.gpu_kernel_accepts(1, 4) and M.gpu_kernel_accepts(1, 2)
    assert not M.gpu_kernel_accepts(4, 8) and not M.gpu_kernel_accepts(3, 4)


# ------------------------------------------------------------------------------ the methods
def _calibration(batch):
    inputs = {k: v for k, v in batch.items() if k != "labels"}

    def batches(samples, seed):
        yield {k: v[:samples] for k, v in inputs.items()}

    return batches


def _run(name, model, batch, pattern="2:4", **options):
    """Drive ``name`` under ``pattern`` through a whole ramp of the trial's hooks; returns the
    method and the groups-with-fewer-than-N check made after every step."""
    cls = get_method(name)
    kind = "oneshot" if cls.one_shot else "cubic"
    schedule = SparsitySchedule(final_sparsity=0.5, kind=kind, start=0.0, end=1.0, interval=1)
    context = TrainingContext(total_steps=STEPS, num_train_examples=64, learning_rate=1e-3,
                              schedule=schedule, evaluate_selection=lambda m: 0.5,
                              calibration_batches=_calibration(batch))
    method = cls(sparsity_pattern=pattern, **options)
    method.prepare(model, prunable_targets(model, cls.default_scope), context)
    optimizer = torch.optim.AdamW(list(model.parameters()) + list(method.extra_parameters()), lr=1e-3)
    n, m = M.parse_sparsity_pattern(pattern)

    def optimizer_step(finite):
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for step in range(STEPS):
        context.step = step
        outputs = model(**batch)
        loss = method.task_loss(outputs, batch, None)
        loss = outputs.loss if loss is None else loss
        extra = method.extra_loss(outputs, batch, None)
        loss.backward(retain_graph=extra is not None)
        method_step_hooks(method, model, step=step, total=STEPS, schedule=schedule,
                          optimizer_step=optimizer_step,
                          extra_backward=None if extra is None else extra.backward)
        for fqn, mask in method.masks.items():
            if name not in PROX_ZEROES:
                assert (mask.reshape(-1, m).sum(1) >= n).all(), f"{name}: {fqn} fell below {n} of {m} at step {step}"
    return method


@pytest.mark.parametrize("name", GRADUAL + ONE_SHOT)
def test_every_unstructured_method_ends_exactly_two_four(name, make_tiny_bert, tiny_batch):
    model = make_tiny_bert(seed=0)
    method = _run(name, model, tiny_batch)
    params = dict(model.named_parameters())
    for fqn, mask in method.masks.items():
        w = params[fqn].detach()
        assert M.nm_violations(w, 2, 4) == 0, f"{name}: {fqn} breaks 2:4"
        if name not in PROX_ZEROES:
            assert torch.equal(mask.reshape(-1, 4).sum(1), torch.full((mask.numel() // 4,), 2)), fqn
    diag = method.diagnostics()
    assert diag["nm_violations"] == 0.0
    assert diag["nm_sparsity"] >= 0.5
    # Biases (PLATON's and PINS' scope) are not 2-D weights: they stay dense.
    biases = [t for t in prunable_targets(model, get_method(name).default_scope) if t.endswith("bias")]
    assert diag["nm_dense_layers"] == float(len(biases))
    assert set(method.dense_layers) == set(biases)


@pytest.mark.parametrize("name", ["magnitude", "movement", "wanda", "sparsegpt"])
def test_layers_the_gpu_kernel_cannot_take_stay_dense(name, make_tiny_bert, tiny_batch):
    model = make_tiny_bert(seed=0, intermediate_size=72)  # FFN weights (72, 32) and (32, 72)
    dense_before = {f: p.detach().clone() for f, p in model.named_parameters() if "dense" in f}
    method = _run(name, model, tiny_batch, pattern="4:8")
    assert set(method.dense_layers) == {f"bert.encoder.layer.{i}.{p}.weight" for i in (0, 1)
                                        for p in ("intermediate.dense", "output.dense")}
    assert not set(method.dense_layers) & set(method.masks)
    for fqn in method.dense_layers:
        assert int((dict(model.named_parameters())[fqn] == 0).sum()) == 0, f"{fqn} was pruned"
    assert method.diagnostics()["nm_dense_layers"] == 4.0
    assert method.diagnostics()["nm_violations"] == 0.0
    assert dense_before  # the FFN weights existed


def test_nm_is_refused_by_structured_methods():
    with pytest.raises(ValueError, match="unstructured methods only"):
        get_method("grain")(sparsity_pattern="2:4")
