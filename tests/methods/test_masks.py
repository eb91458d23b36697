"""rayprune.methods.masks on hand-made scores where the pruned entries are known."""

from __future__ import annotations

import pytest
import torch

from rayprune.methods import masks

NEG_INF = float("-inf")


def _pruned(mask_by_name):
    """Number of pruned (False) entries over all masks."""
    return sum(int((~m).sum()) for m in mask_by_name.values())


# ---------------------------------------------------------------------------- global_threshold
def test_global_threshold_is_the_kth_smallest_over_all_tensors():
    scores = {"a": torch.tensor([3.0, 1.0, 2.0]), "b": torch.tensor([[5.0, 0.0]])}
    # All values sorted: 0, 1, 2, 3, 5.
    assert masks.global_threshold(scores, 1) == 0.0
    assert masks.global_threshold(scores, 3) == 2.0
    assert masks.global_threshold(scores, 5) == 5.0
    assert masks.global_threshold(scores, 0) == NEG_INF


@pytest.mark.parametrize("k", [-1, 6])
def test_global_threshold_rejects_k_out_of_range(k):
    scores = {"a": torch.tensor([3.0, 1.0, 2.0]), "b": torch.tensor([[5.0, 0.0]])}
    with pytest.raises(ValueError, match=f"k={k}"):
        masks.global_threshold(scores, k)


# ---------------------------------------------------------------------------- exact selection
SCORES = {
    "a": torch.tensor([0.1, 0.5, 0.3]),
    "b": torch.tensor([[0.2, 0.9], [0.05, 0.6]]),
}


def test_global_selection_prunes_the_lowest_scores_across_tensors():
    # 7 entries, sparsity 3/7 -> k = 3: the three lowest are 0.05 (b), 0.1 (a), 0.2 (b).
    out = masks.select_lowest_k_global(SCORES, 3 / 7)
    assert out["a"].tolist() == [False, True, True]
    assert out["b"].tolist() == [[False, True], [False, True]]
    assert out["a"].dtype == torch.bool and out["b"].shape == SCORES["b"].shape


def test_per_tensor_selection_prunes_each_tensor_to_the_same_sparsity():
    # sparsity 0.34: a has 3 entries -> round(1.02) = 1 (0.1); b has 4 -> round(1.36) = 1 (0.05).
    out = masks.select_lowest_k_per_tensor(SCORES, 0.34)
    assert out["a"].tolist() == [False, True, True]
    assert out["b"].tolist() == [[True, True], [False, True]]


def test_global_and_per_tensor_selection_differ_when_one_tensor_scores_low():
    scores = {"low": torch.tensor([0.1, 0.2, 0.3, 0.4]), "high": torch.tensor([0.5, 0.6, 0.7, 0.8])}
    glob = masks.select_lowest_k_global(scores, 0.5)  # the 4 lowest overall: all of `low`
    assert glob["low"].tolist() == [False] * 4
    assert glob["high"].tolist() == [True] * 4
    per = masks.select_lowest_k_per_tensor(scores, 0.5)  # the 2 lowest of each
    assert per["low"].tolist() == [False, False, True, True]
    assert per["high"].tolist() == [False, False, True, True]


@pytest.mark.parametrize("sparsity", [0.1, 0.3, 0.55, 0.9])
def test_exact_k_under_ties(sparsity):
    # Every score equal: a threshold would prune all or nothing, the exact cut prunes k.
    tied = {"a": torch.zeros(4, 5), "b": torch.zeros(10)}
    assert _pruned(masks.select_lowest_k_global(tied, sparsity)) == round(sparsity * 30)
    per = masks.select_lowest_k_per_tensor(tied, sparsity)
    assert int((~per["a"]).sum()) == round(sparsity * 20)
    assert int((~per["b"]).sum()) == round(sparsity * 10)


def test_ties_at_the_cut_with_already_pruned_entries():
    # Already-pruned entries are scored -inf by PruningMethod.step; they go first, then k - 2
    # of the tied 1.0s, never the 2.0.
    scores = {"a": torch.tensor([NEG_INF, 1.0, 1.0, 2.0, 1.0, NEG_INF])}
    out = masks.select_lowest_k_global(scores, 0.5)  # k = 3
    keep = out["a"].tolist()
    assert keep[0] is False and keep[5] is False and keep[3] is True
    assert keep.count(False) == 3


def test_selection_is_deterministic_for_the_same_input():
    tied = {"a": torch.zeros(50), "b": torch.zeros(7, 3)}
    first = masks.select_lowest_k_global(tied, 0.4)
    second = masks.select_lowest_k_global({k: v.clone() for k, v in tied.items()}, 0.4)
    for name in tied:
        assert torch.equal(first[name], second[name])


def test_zero_sparsity_keeps_everything():
    for select in (masks.select_lowest_k_global, masks.select_lowest_k_per_tensor):
        out = select(SCORES, 0.0)
        assert all(bool(m.all()) for m in out.values())


def test_tiny_sparsity_rounds_to_zero_entries():
    # 0.01 * 7 rounds to 0: within one element of the request, nothing pruned.
    assert _pruned(masks.select_lowest_k_global(SCORES, 0.01)) == 0


@pytest.mark.parametrize("sparsity", [1.0, -0.1, float("nan"), 1.5])
def test_selection_rejects_sparsity_outside_0_1(sparsity):
    for select in (masks.select_lowest_k_global, masks.select_lowest_k_per_tensor):
        with pytest.raises(ValueError, match="sparsity must be in"):
            select(SCORES, sparsity)


def test_threshold_path_prunes_all_ties_at_the_threshold(monkeypatch):
    # Above the exact-selection limit the cut is a threshold: ties at it are all pruned.
    monkeypatch.setattr(masks, "_EXACT_THRESHOLD_LIMIT", 4)
    scores = {"a": torch.tensor([0.0, 1.0, 1.0, 1.0, 2.0, 3.0])}
    out = masks.select_lowest_k_global(scores, 0.34)  # k = 2 -> threshold 1.0
    assert out["a"].tolist() == [False, False, False, False, True, True]


# ---------------------------------------------------------------------------- sampled threshold
@pytest.fixture(scope="module")
def big_scores():
    """~4.5M random scores: above the exact limit, so exact=False takes the sampled path."""
    gen = torch.Generator().manual_seed(0)
    scores = {
        "a": torch.randn(2048, 2048, generator=gen),
        "b": torch.rand(1024, 256, generator=gen),  # another distribution in the mix
    }
    assert sum(s.numel() for s in scores.values()) > masks._EXACT_THRESHOLD_LIMIT
    return scores


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.9])
def test_sampled_threshold_is_close_to_the_exact_one(big_scores, sparsity):
    total = sum(s.numel() for s in big_scores.values())
    k = round(sparsity * total)
    sampled = masks.global_threshold(big_scores, k, exact=False)
    exact = masks.global_threshold(big_scores, k, exact=True)
    # Close in rank: the entries below the sampled cut differ from k by < 0.2% of the total
    # (the module note promises ~0.1% for a 2**20 sample).
    below = sum(int((s <= sampled).sum()) for s in big_scores.values())
    assert abs(below - k) < 0.002 * total
    assert sampled == pytest.approx(exact, abs=0.02)
    out = masks.select_lowest_k_global(big_scores, sparsity, exact=False)
    assert abs(_pruned(out) / total - sparsity) < 0.002


def test_sampled_threshold_with_already_pruned_entries_prunes_no_more(big_scores):
    # Regression: the sample's quantile interpolated between -inf entries (already pruned by
    # PruningMethod.step) gave NaN, and `score > NaN` pruned every entry.  A masking step that
    # asks for no more than is already pruned (a sampled cut that overshot last time, then the
    # same target again) must prune exactly the already-pruned entries.
    scores = {name: s.clone() for name, s in big_scores.items()}
    scores["a"][:1024] = NEG_INF  # 2M of 4.45M entries (47%) already pruned
    already = 1024 * 2048
    total = sum(s.numel() for s in scores.values())
    for sparsity in (0.45, 0.46):
        threshold = masks.global_threshold(scores, round(sparsity * total), exact=False)
        assert threshold == NEG_INF
        out = masks.select_lowest_k_global(scores, sparsity, exact=False)
        assert _pruned(out) == already
    # Just above the pruned fraction the cut lands among the finite scores.
    out = masks.select_lowest_k_global(scores, 0.5, exact=False)
    assert abs(_pruned(out) - 0.5 * total) < 0.002 * total


# ---------------------------------------------------------------------------- counting
def test_count_zeros_and_sparsity_of():
    tensors = {"a": torch.tensor([0.0, 1.0, 0.0, 2.0]), "b": torch.zeros(2, 3)}
    assert masks.count_zeros(tensors) == (8, 10)
    assert masks.count_zeros(list(tensors.values())) == (8, 10)
    assert masks.sparsity_of(tensors) == pytest.approx(0.8)
    assert masks.sparsity_of({}) == 0.0
    # -0.0 is a zero; a tiny value is not.
    assert masks.count_zeros([torch.tensor([-0.0, 1e-30])]) == (1, 2)


# ---------------------------------------------------------------------------- reselection
def test_reselect_keep_chooses_again_from_the_current_scores_by_hand():
    score = torch.tensor([0.1, 0.5, 0.3, 0.9, 0.2, 0.05])
    keep = torch.tensor([True, True, False, True, True, False])  # 0.3 and 0.05 pruned before
    # Half pruned (k = 3): the three lowest now are 0.05, 0.1, 0.2, so 0.3 (index 2) comes back
    # and 0.1, 0.2 (indices 0, 4) go; 0.05 stays pruned.
    new = masks.reselect_keep(score, keep, 0.5)
    assert new.tolist() == [False, True, True, True, False, False]
    assert keep.tolist() == [True, True, False, True, True, False]  # not modified


def test_reselect_keep_breaks_ties_in_favour_of_the_current_mask():
    score = torch.zeros(6)  # every entry tied, e.g. scores that never moved from 0
    keep = torch.tensor([False, True, True, False, True, True])
    assert torch.equal(masks.reselect_keep(score, keep, 2 / 6), keep)
    # One more to prune: the earliest kept entry among the tied goes last, so index 5.
    assert masks.reselect_keep(score, keep, 3 / 6).tolist() == [False, True, True, False, True, False]
    # Fewer to prune: the pruned entries come back by position, earliest first.
    assert masks.reselect_keep(score, keep, 1 / 6).tolist() == [True, True, True, False, True, True]


def test_reselect_keep_per_tensor_and_with_a_ceiling():
    score = torch.tensor([0.4, 0.1, 0.3, 0.2, 0.9, 0.8])
    keep = torch.ones(6, dtype=torch.bool)
    # Two tensors of 3, one entry pruned in each: 0.1 of the first, 0.2 of the second.
    assert masks.reselect_keep(score, keep, 1 / 3, sizes=[3, 3]).tolist() == [
        True, False, True, False, True, True,
    ]
    # Global, half, but only scores <= 0.25 may go: a cap of 2 (0.1 and 0.2).
    assert masks.reselect_keep(score, keep, 0.5, ceiling=0.25).tolist() == [
        True, False, True, False, True, True,
    ]
    with pytest.raises(ValueError, match="sizes sum"):
        masks.reselect_keep(score, keep, 0.5, sizes=[2, 2])
    with pytest.raises(ValueError, match="sparsity=1.0"):
        masks.reselect_keep(score, keep, 1.0)


def test_reselect_keep_matches_a_full_sort_on_a_large_tensor():
    gen = torch.Generator().manual_seed(5)
    score = torch.randn(300_000, generator=gen)
    keep = torch.rand(300_000, generator=gen) > 0.3
    new = masks.reselect_keep(score, keep, 0.9, generator=torch.Generator().manual_seed(1))
    expected = torch.ones_like(keep)
    expected[torch.argsort(score)[:270_000]] = False
    assert torch.equal(new, expected)


@pytest.mark.parametrize("k", [1, 17, 150_000, 299_990, 300_000])
def test_kth_smallest_is_exact(k):
    values = torch.randn(300_000, generator=torch.Generator().manual_seed(k))
    want = float(torch.kthvalue(values, k).values)
    assert masks.kth_smallest(values, k, generator=torch.Generator().manual_seed(0)) == want
    with pytest.raises(ValueError, match="k=0"):
        masks.kth_smallest(values, 0)


def test_prefer_current_moves_only_pruned_entries_just_below():
    score = torch.tensor([0.0, 0.0, 1.0, 1.0])
    keep = torch.tensor([True, False, True, False])
    nudged = masks.prefer_current(score, keep)
    assert nudged[0] == 0.0 and nudged[2] == 1.0
    assert -1e-30 < nudged[1] < 0.0 and 0.9999 < nudged[3] < 1.0
