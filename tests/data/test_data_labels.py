"""Seeded subsampling and the selection split (shared by every source)."""

from data_files import numbered_csv
from rayprune.data import DataSpec, load_task


def _spec(path: str, **kw) -> DataSpec:
    return DataSpec(train_files=[path], eval_files=[path], text_fields=["sentence"], **kw)


def _sentences(examples) -> list[str]:
    return [ex["sentence"] for ex in examples]


def test_subsampling_is_deterministic_and_nested(tmp_path):
    path = numbered_csv(tmp_path, 300)
    a = load_task(_spec(path, max_train_samples=100, max_eval_samples=40, seed=3))
    b = load_task(_spec(path, max_train_samples=100, max_eval_samples=40, seed=3))
    assert (a.train, a.selection, a.eval) == (b.train, b.selection, b.eval)
    c = load_task(_spec(path, max_train_samples=100, max_eval_samples=40, seed=4))
    assert set(_sentences(c.train)) != set(_sentences(a.train))
    # Not the first 100 rows: a random subset.
    assert set(_sentences(a.train + a.selection)) != {f"sentence number {i}" for i in range(100)}
    small = load_task(_spec(path, max_train_samples=50, selection_fraction=0.0, seed=3))
    big = load_task(_spec(path, max_train_samples=100, selection_fraction=0.0, seed=3))
    assert set(_sentences(small.train)) < set(_sentences(big.train))


def test_selection_split_is_drawn_from_train_and_disjoint(tmp_path):
    path = numbered_csv(tmp_path, 300)
    full = load_task(_spec(path, max_train_samples=100, selection_fraction=0.0, seed=1))
    task = load_task(_spec(path, max_train_samples=100, selection_fraction=0.2, seed=1))
    train, sel = set(_sentences(task.train)), set(_sentences(task.selection))
    assert len(sel) == 20 and len(train) == 80
    assert not train & sel
    assert train | sel == set(_sentences(full.train))
    # Eval is never touched by the selection split.
    assert task.eval == full.eval
