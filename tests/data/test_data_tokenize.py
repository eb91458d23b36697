"""Tokenization and dynamic padding."""

import pickle

import numpy as np
import torch

from data_files import write_csv
from rayprune.data import DataSpec, TokenizedSplit, load_task, make_demo_task, tokenize_task


def _ragged_split(lengths: list[int]) -> TokenizedSplit:
    n, width = len(lengths), max(lengths) + 3  # extra all-pad columns, as after subset()
    ids = np.zeros((n, width), dtype=np.int32)
    mask = np.zeros((n, width), dtype=np.int8)
    for i, length in enumerate(lengths):
        ids[i, :length] = np.arange(1, length + 1) + 100 * i
        mask[i, :length] = 1
    return TokenizedSplit(input_ids=ids, attention_mask=mask, token_type_ids=None,
                          labels=np.arange(n, dtype=np.int64))


def test_batches_trim_padding_and_cover_each_example_once():
    lengths = [3, 9, 2, 5, 7, 1, 4, 8, 6, 2]
    split = _ragged_split(lengths)
    seen = []
    for batch in split.batches(4, shuffle=True, seed=5):
        rows = batch["labels"].tolist()  # labels are the row numbers here
        seen += rows
        assert batch["input_ids"].dtype == torch.int64
        assert batch["input_ids"].shape == batch["attention_mask"].shape
        # Trimmed to the longest sequence of this batch, and nothing real is cut off.
        assert batch["input_ids"].shape[1] == max(lengths[r] for r in rows)
        for k, r in enumerate(rows):
            assert batch["attention_mask"][k].sum().item() == lengths[r]
            real = split.input_ids[r, : lengths[r]].tolist()
            assert batch["input_ids"][k, : lengths[r]].tolist() == real
    assert sorted(seen) == list(range(10)) and len(seen) == 10
    assert seen != list(range(10))  # shuffled
    again = [r for b in split.batches(4, shuffle=True, seed=5) for r in b["labels"].tolist()]
    other = [r for b in split.batches(4, shuffle=True, seed=6) for r in b["labels"].tolist()]
    assert again == seen and other != seen
    ordered = [r for b in split.batches(4, shuffle=False) for r in b["labels"].tolist()]
    assert ordered == list(range(10))
    assert [len(b["labels"]) for b in split.batches(4, shuffle=False, drop_last=True)] == [4, 4]
    sub = split.subset([1, 5])
    assert len(sub) == 2 and sub.lengths().tolist() == [9, 1]


def test_tokenize_task_pairs_singles_and_pickle(tokenizer, tmp_path):
    rows = [["a cat sat", "on the mat", 0], ["dogs bark loudly at night", "yes", 1],
            ["one " * 40, "two " * 40, 1], ["hi", "there", 0]]
    path = write_csv(tmp_path / "pairs.csv", ["s1", "s2", "label"], rows)
    task = load_task(DataSpec(train_files=[path], eval_files=[path], text_fields=["s1", "s2"],
                              selection_fraction=0.25))
    data = tokenize_task(task, tokenizer, max_seq_length=16)
    ev = data.eval
    assert ev.input_ids.dtype == np.int32 and ev.labels.dtype == np.int64
    assert ev.input_ids.shape == (4, 16)  # padded to the longest (the truncated third row)
    assert ev.lengths().tolist()[2] == 16
    first = ev.input_ids[0, : ev.lengths()[0]]
    assert tokenizer.decode(first) == "[CLS] a cat sat [SEP] on the mat [SEP]"
    # Segment ids: 0 for "[CLS] a cat sat [SEP]", 1 for "on the mat [SEP]".
    assert ev.token_type_ids[0, : ev.lengths()[0]].tolist() == [0] * 5 + [1] * 4
    assert len(data.train) == 3 and len(data.selection) == 1
    assert data.unlabeled_texts[0] in {f"{a} {b}" for a, b, _ in rows}
    batch = next(ev.batches(2, shuffle=False))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert batch["input_ids"].shape == (2, 9)  # "dogs bark loudly at night" + "yes" + 3 specials
    clone = pickle.loads(pickle.dumps(data))
    assert np.array_equal(clone.eval.input_ids, ev.input_ids) and clone.metrics == ("accuracy",)

    single = tokenize_task(make_demo_task(n_train=40, n_eval=10), tokenizer)
    assert single.train.token_type_ids is None
    assert "token_type_ids" not in next(single.train.batches(8, shuffle=True))


def test_regression_labels_are_float(tokenizer, tmp_path):
    path = write_csv(tmp_path / "r.csv", ["s", "y"], [["a", 0.5], ["b", 2.5], ["c", 1.0]])
    task = load_task(DataSpec(train_files=[path], eval_files=[path], text_fields=["s"],
                              label_field="y", selection_fraction=0.0))
    batch = next(tokenize_task(task, tokenizer).eval.batches(3, shuffle=False))
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == [0.5, 2.5, 1.0]


def test_max_seq_length_comes_from_the_spec_unless_given(tokenizer, tmp_path):
    long = "word " * 30
    path = write_csv(tmp_path / "l.csv", ["s", "label"], [[long, 0], [long, 1], ["short", 0]])
    spec = DataSpec(train_files=[path], eval_files=[path], text_fields=["s"], max_seq_length=10,
                    selection_fraction=0.0)
    task = load_task(spec)
    assert task.max_seq_length == 10
    data = tokenize_task(task, tokenizer)
    assert data.max_seq_length == 10 and data.eval.input_ids.shape == (3, 10)
    wider = tokenize_task(task, tokenizer, max_seq_length=20)  # the keyword still wins
    assert wider.max_seq_length == 20 and wider.eval.input_ids.shape == (3, 20)
    assert tokenize_task(make_demo_task(n_train=20, n_eval=4), tokenizer).max_seq_length == 128
    demo = load_task(DataSpec(task="demo", max_train_samples=20, max_eval_samples=4,
                              max_seq_length=9))
    assert tokenize_task(demo, tokenizer).eval.input_ids.shape[1] <= 9
