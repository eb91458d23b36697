"""Data layer: GLUE files, local files, hub path, subsampling, selection split, tokenization,
dynamic padding and the demo task."""

import collections
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from rayprune.data import (
    DATA_DIR_ENV,
    GLUE_TASKS,
    DataSpec,
    TokenizedSplit,
    find_local_glue_dir,
    load_task,
    make_demo_task,
    read_glue_tsv,
    tokenize_task,
)

GLUE_DIR = Path("/work/shared/data/glue")
needs_glue = pytest.mark.skipif(
    not GLUE_DIR.is_dir(), reason=f"real GLUE files not present at {GLUE_DIR}"
)


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch):
    # A data dir set in the developer's shell must not change what these tests load.
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


@pytest.fixture(scope="module")
def tokenizer():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    from rayprune.models import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path("bundled:minilm-l6"))


def write_csv(path: Path, header: list[str], rows: list[list]) -> str:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def numbered_csv(tmp_path: Path, n: int, name: str = "train.csv") -> str:
    """n rows whose sentence names the row, so subsets can be checked by content."""
    rows = [[f"sentence number {i}", i % 2] for i in range(n)]
    return write_csv(tmp_path / name, ["sentence", "label"], rows)


# --------------------------------------------------------------------------------------------
# Real GLUE files
# --------------------------------------------------------------------------------------------

# Row and label counts from /work/shared/data/SOURCES.md (hub order: entailment = 0).
GLUE_FILES = [
    ("sst2", "train.tsv", 67349, {1: 37569, 0: 29780}),
    ("sst2", "dev.tsv", 872, {1: 444, 0: 428}),
    ("cola", "train.tsv", 8551, {1: 6023, 0: 2528}),
    ("cola", "dev.tsv", 1043, {1: 721, 0: 322}),
    ("rte", "train.tsv", 2490, {0: 1249, 1: 1241}),
    ("rte", "dev.tsv", 277, {0: 146, 1: 131}),
    ("qnli", "dev.tsv", 5463, {0: 2702, 1: 2761}),
]


@needs_glue
@pytest.mark.parametrize("task,fname,rows,counts", GLUE_FILES)
def test_read_real_glue_tsv(task, fname, rows, counts):
    examples = read_glue_tsv(GLUE_DIR / task / fname, task)
    preset = GLUE_TASKS[task]
    assert len(examples) == rows
    assert set(examples[0]) == {*preset.text_fields, "label"}
    assert dict(collections.Counter(ex["label"] for ex in examples)) == counts
    assert all(isinstance(ex[f], str) and ex[f] for ex in examples for f in preset.text_fields)


@needs_glue
def test_cola_has_no_header_and_keeps_the_sentence_column():
    examples = read_glue_tsv(GLUE_DIR / "cola" / "dev.tsv", "cola")
    # First line: "gj04 \t 1 \t (empty) \t The sailors rode the breeze clear of the rocks."
    first = {"sentence": "The sailors rode the breeze clear of the rocks.", "label": 1}
    assert examples[0] == first


@needs_glue
def test_load_task_lowercase_layout_rte():
    task = load_task(DataSpec(task="rte", selection_fraction=0.1), data_dir=str(GLUE_DIR))
    assert task.text_fields == ("sentence1", "sentence2")
    assert task.num_labels == 2 and not task.is_regression
    assert task.label_names == ("entailment", "not_entailment")
    assert task.metrics == ("accuracy",)
    assert len(task.train) + len(task.selection) == 2490
    assert len(task.selection) == 249
    assert len(task.eval) == 277
    # The eval split is the dev file, in file order, untouched by the selection split.
    assert task.eval[0]["sentence2"] == "Christopher Reeve had an accident."
    assert task.eval[0]["label"] == 1  # not_entailment


@needs_glue
def test_load_task_cola_primary_metric_is_mcc():
    task = load_task(DataSpec(task="cola", max_train_samples=200), data_dir=str(GLUE_DIR))
    assert task.primary_metric == "matthews_correlation"
    assert len(task.train) + len(task.selection) == 200
    assert len(task.eval) == 1043


@needs_glue
def test_official_layout_via_symlinks_and_env(tmp_path, monkeypatch):
    root = tmp_path / "glue_data"
    for official, lower in (("SST-2", "sst2"), ("CoLA", "cola")):
        (root / official).mkdir(parents=True)
        for fname in ("train.tsv", "dev.tsv"):
            (root / official / fname).symlink_to(GLUE_DIR / lower / fname)
    assert find_local_glue_dir(root, "sst2") == root / "SST-2"
    # A parent folder holding `glue_data/` works too.
    assert find_local_glue_dir(tmp_path, "SST-2") == root / "SST-2"
    assert find_local_glue_dir(root, "rte") is None

    monkeypatch.setenv(DATA_DIR_ENV, str(root))
    task = load_task(DataSpec(task="SST-2", max_train_samples=300, max_eval_samples=100))
    assert task.name == "sst2" and task.source == f"local:{root / 'SST-2'}"
    assert len(task.train) + len(task.selection) == 300 and len(task.eval) == 100
    assert {ex["label"] for ex in task.eval} == {0, 1}

    cola = load_task(DataSpec(task="CoLA", max_train_samples=50), data_dir=str(root))
    assert cola.eval[0]["sentence"] == "The sailors rode the breeze clear of the rocks."


@needs_glue
def test_glue_task_missing_or_incomplete_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"GLUE task 'mrpc' not found under .*MRPC/dev.tsv"):
        load_task(DataSpec(task="mrpc"), data_dir=str(GLUE_DIR))
    # The stored QNLI has a dev file but no train file.
    with pytest.raises(ValueError, match=r"qnli.*train.tsv is missing"):
        load_task(DataSpec(task="qnli"), data_dir=str(GLUE_DIR))
    with pytest.raises(ValueError, match="data directory not found"):
        load_task(DataSpec(task="rte"), data_dir=str(tmp_path / "nope"))


def _write_tsv(path: Path, lines: list[str], bom: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")


def test_official_headers_of_the_other_glue_tasks(tmp_path):
    """MRPC, QQP, STS-B and MNLI in the download_glue_data.py layout, two rows per file."""
    mrpc_head = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
    mrpc = ['1\t1\t2\tHe said "yes .\tHe agreed .', "0\t3\t4\tIt rained .\tIt was sunny ."]
    _write_tsv(tmp_path / "MRPC" / "train.tsv", [mrpc_head, *mrpc], bom=True)
    _write_tsv(tmp_path / "MRPC" / "dev.tsv", [mrpc_head, *mrpc], bom=True)
    qqp_head = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"
    qqp = ["0\t1\t2\tWhy?\tWhy not?\t0", "1\t3\t4\tHow?\tIn what way?\t1",
           "2\t5\t6\ta question cut by a newline"]  # a malformed row, as in QQP's train.tsv
    _write_tsv(tmp_path / "QQP" / "train.tsv", [qqp_head, *qqp])
    _write_tsv(tmp_path / "QQP" / "dev.tsv", [qqp_head, *qqp[:2]])
    sts_head = ("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1"
                "\tsentence2\tscore")
    sts = ["0\tmain-captions\tMSRvid\t2012test\t1\tnone\tnone\tA plane takes off.\tAn air plane"
           " is taking off.\t5.000", "1\tmain-news\tx\t2012\t2\tnone\tnone\tA man.\tA cat.\t0.250"]
    _write_tsv(tmp_path / "STS-B" / "train.tsv", [sts_head, *sts])
    _write_tsv(tmp_path / "STS-B" / "dev.tsv", [sts_head, *sts])
    parse = "\t".join(["( a )"] * 4)
    mnli_train_head = (
        "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse"
        "\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label"
    )
    mnli_dev_head = mnli_train_head.replace("label1", "label1\tlabel2\tlabel3\tlabel4\tlabel5")
    _write_tsv(tmp_path / "MNLI" / "train.tsv", [
        mnli_train_head,
        f"0\t1\t1n\tslate\t{parse}\tThe new rights are nice.\tEveryone likes them.\tneutral"
        "\tneutral",
        f"1\t2\t2c\tslate\t{parse}\tIt is red.\tIt is blue.\tcontradiction\tcontradiction",
    ])
    _write_tsv(tmp_path / "MNLI" / "dev_matched.tsv", [
        mnli_dev_head,
        f"0\t1\t1e\tfiction\t{parse}\tA dog runs.\tAn animal moves.\t" + "entailment\t" * 5
        + "entailment",
    ])

    mrpc_task = load_task(DataSpec(task="mrpc", selection_fraction=0.0), data_dir=str(tmp_path))
    first = {"sentence1": 'He said "yes .', "sentence2": "He agreed .", "label": 1}
    assert mrpc_task.train[0] == first
    assert mrpc_task.metrics == ("accuracy", "f1")
    with pytest.warns(UserWarning, match="dropped 1 rows"):
        qqp_task = load_task(DataSpec(task="qqp", selection_fraction=0.0), data_dir=str(tmp_path))
    assert [ex["label"] for ex in qqp_task.train] == [0, 1]
    assert qqp_task.train[1]["question2"] == "In what way?"
    sts_task = load_task(DataSpec(task="STS-B", selection_fraction=0.0), data_dir=str(tmp_path))
    assert sts_task.is_regression and [ex["label"] for ex in sts_task.train] == [5.0, 0.25]
    assert sts_task.train[0]["sentence1"] == "A plane takes off."
    mnli_task = load_task(DataSpec(task="mnli", selection_fraction=0.0), data_dir=str(tmp_path))
    assert [ex["label"] for ex in mnli_task.train] == [1, 2]  # neutral, contradiction
    only = {"premise": "A dog runs.", "hypothesis": "An animal moves.", "label": 0}
    assert mnli_task.eval == [only]


# --------------------------------------------------------------------------------------------
# Local files in every supported format
# --------------------------------------------------------------------------------------------


def test_local_csv_with_string_labels(tmp_path):
    train = write_csv(
        tmp_path / "train.csv",
        ["text", "sentiment"],
        [["good film", "pos"], ["bad film", "neg"], ['a "quoted", comma', "pos"], ["NA", "neg"]],
    )
    evals = write_csv(
        tmp_path / "dev.csv", ["text", "sentiment"], [["fine", "pos"], ["meh", "neg"]]
    )
    spec = DataSpec(
        train_files=[train], eval_files=[evals], text_fields=["text"], label_field="sentiment",
        selection_fraction=0.0,
    )
    task = load_task(spec)
    assert task.label_names == ("neg", "pos") and task.num_labels == 2
    assert task.metrics == ("accuracy",)
    assert task.train == [
        {"text": "good film", "sentiment": 1},
        {"text": "bad film", "sentiment": 0},
        {"text": 'a "quoted", comma', "sentiment": 1},
        {"text": "NA", "sentiment": 0},  # "NA" is text, not a missing value
    ]
    assert task.eval == [{"text": "fine", "sentiment": 1}, {"text": "meh", "sentiment": 0}]


def test_local_tsv_pairs_keep_bare_quotes(tmp_path):
    lines = ["premise\thypothesis\tlabel", 'he said "hi\tsomeone spoke\t0', "x\ty\t2", "a\tb\t1"]
    path = tmp_path / "train.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    task = load_task(
        DataSpec(train_files=[str(path)], eval_files=[str(path)],
                 text_fields=["premise", "hypothesis"], selection_fraction=0.0)
    )
    assert task.train[0] == {"premise": 'he said "hi', "hypothesis": "someone spoke", "label": 0}
    assert task.num_labels == 3  # integer ids: max + 1


def test_local_json_jsonl_and_parquet(tmp_path):
    rows = [{"sentence": f"s{i}", "label": i % 3} for i in range(12)]
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    as_json = tmp_path / "dev.json"
    as_json.write_text(json.dumps(rows[:5]), encoding="utf-8")
    task = load_task(
        DataSpec(train_files=[str(jsonl)], eval_files=[str(as_json)], text_fields=["sentence"],
                 selection_fraction=0.0)
    )
    assert task.train == rows and task.eval == rows[:5] and task.num_labels == 3

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    task = load_task(
        DataSpec(train_files=[str(tmp_path / "train.parquet")], eval_files=[str(as_json)],
                 text_fields=["sentence"], selection_fraction=0.0, metrics=["matthews_correlation"])
    )
    assert task.train == rows and task.metrics == ("matthews_correlation",)


def test_local_float_labels_are_regression(tmp_path):
    rows = [[f"a{i}", f"b{i}", i / 4] for i in range(8)]
    path = write_csv(tmp_path / "sts.csv", ["s1", "s2", "score"], rows)
    task = load_task(
        DataSpec(train_files=[path], eval_files=[path], text_fields=["s1", "s2"],
                 label_field="score", selection_fraction=0.0)
    )
    assert task.is_regression and task.num_labels == 1
    assert task.metrics == ("pearson", "spearman")
    assert [ex["score"] for ex in task.train] == [i / 4 for i in range(8)]


def test_glue_preset_with_local_files_maps_string_labels_in_hub_order(tmp_path):
    rows = [["p1", "h1", "not_entailment"], ["p2", "h2", "entailment"]]
    path = write_csv(tmp_path / "rte.csv", ["sentence1", "sentence2", "label"], rows)
    task = load_task(DataSpec(task="rte", train_files=[path], eval_files=[path],
                              selection_fraction=0.0))
    assert [ex["label"] for ex in task.train] == [1, 0]
    assert task.label_names == ("entailment", "not_entailment")


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_unknown_task_lists_allowed_names():
    with pytest.raises(ValueError, match=r"unknown task 'sst3'.*'cola'.*'sst2'.*'demo'"):
        DataSpec(task="sst3")


def test_missing_column_names_it_and_the_available_ones(tmp_path):
    path = numbered_csv(tmp_path, 4)
    spec = DataSpec(train_files=[path], eval_files=[path], text_fields=["text"])
    with pytest.raises(ValueError, match=r"column 'text' not found.*\['sentence', 'label'\]"):
        load_task(spec)
    spec = DataSpec(train_files=[path], eval_files=[path], text_fields=["sentence"],
                    label_field="y")
    with pytest.raises(ValueError, match=r"column 'y' not found"):
        load_task(spec)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({}, "no data source"),
        ({"dataset": "imdb"}, "text_fields is required"),
        ({"task": "sst2", "selection_fraction": 1.0}, r"selection_fraction must be in \[0, 1\)"),
        ({"task": "sst2", "max_train_samples": 0}, "max_train_samples must be >= 1"),
        ({"task": "sst2", "text_fields": ["a"]}, "set by the GLUE preset"),
        ({"task": "sst2", "num_labels": 3}, "contradicts the GLUE preset"),
        ({"task": "sst2", "metrics": ["bleu"]}, "metrics must be a non-empty list"),
        ({"task": "sst2", "dataset": "imdb"}, "pick one source"),
        ({"train_files": ["a.csv"], "text_fields": ["t"]}, "eval_files go together"),
        ({"train_files": ["a.xlsx"], "eval_files": ["b.csv"], "text_fields": ["t"]},
         "unsupported file type"),
        ({"dataset": "imdb", "text_fields": ["a", "b", "c"]}, "1 or 2 text columns"),
    ],
)
def test_spec_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataSpec(**kwargs)


def test_metrics_must_fit_the_label_type(tmp_path):
    path = numbered_csv(tmp_path, 6)
    with pytest.raises(ValueError, match="do not apply to classification"):
        load_task(DataSpec(train_files=[path], eval_files=[path], text_fields=["sentence"],
                           metrics=["pearson"]))
    with pytest.raises(ValueError, match="data file not found"):
        load_task(DataSpec(train_files=[str(tmp_path / "none.csv")], eval_files=[path],
                           text_fields=["sentence"]))


def test_hub_glue_preset_uses_hub_names(monkeypatch):
    """Without a data dir a GLUE preset goes to the hub; a fake `load_dataset` stands in."""
    import datasets

    calls = []
    features = datasets.Features(
        {"sentence": datasets.Value("string"),
         "label": datasets.ClassLabel(names=["negative", "positive"]),
         "idx": datasets.Value("int32")}
    )

    def fake_load_dataset(name, config=None, **kwargs):
        calls.append((name, config))
        split = lambda n: datasets.Dataset.from_dict(  # noqa: E731
            {"sentence": [f"s{i}" for i in range(n)], "label": [i % 2 for i in range(n)],
             "idx": list(range(n))}, features=features)
        return datasets.DatasetDict({"train": split(20), "validation": split(6), "test": split(3)})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    task = load_task(DataSpec(task="sst2", selection_fraction=0.25))
    assert calls == [("nyu-mll/glue", "sst2")]
    assert task.label_names == ("negative", "positive")
    assert len(task.train) == 15 and len(task.selection) == 5 and len(task.eval) == 6
    assert task.eval[0] == {"sentence": "s0", "label": 0}
    with pytest.raises(ValueError, match=r"no split 'dev'.*\['train', 'validation', 'test'\]"):
        load_task(DataSpec(task="sst2", eval_split="dev"))


def test_hub_failure_says_to_pass_local_data(monkeypatch):
    import datasets

    def offline(name, config=None, **kwargs):
        raise ConnectionError(f"Couldn't reach {name!r} on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ValueError, match=r"could not load dataset 'nyu-mll/glue' \(config 'rte'\) "
                                         r"from the Hugging Face hub \(offline\?\).*--data-dir"):
        load_task(DataSpec(task="rte"))


@pytest.mark.skipif(os.environ.get("HF_HUB_OFFLINE") != "1",
                    reason="needs HF_HUB_OFFLINE=1 so the real hub call fails at once")
def test_real_hub_call_offline_fails_clearly():
    with pytest.raises(ValueError, match="could not load dataset 'imdb'.*pass --data-dir"):
        load_task(DataSpec(dataset="imdb", text_fields=["text"]))


# --------------------------------------------------------------------------------------------
# Subsampling and the selection split
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Tokenization and dynamic padding
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Demo task
# --------------------------------------------------------------------------------------------


def test_demo_is_deterministic_balanced_and_split_cleanly():
    a, b = make_demo_task(seed=0), make_demo_task(seed=0)
    assert (a.train, a.selection, a.eval) == (b.train, b.selection, b.eval)
    assert make_demo_task(seed=1).train != a.train
    train = a.train + a.selection
    assert len(train) == 2000 and len(a.selection) == 200 and len(a.eval) == 500
    assert collections.Counter(ex["label"] for ex in train) == {0: 1000, 1: 1000}
    assert 0.4 < np.mean([ex["label"] for ex in a.eval]) < 0.6
    sentences = _sentences(train)
    assert len(set(sentences)) == len(sentences)
    assert not set(sentences) & set(_sentences(a.eval))
    # Eval also uses adjectives train never shows; nothing else is new.
    from rayprune.data import _EVAL_ONLY_NEGATIVE, _EVAL_ONLY_POSITIVE

    train_words = {w for s in sentences for w in s.split()}
    unseen = {w for s in _sentences(a.eval) for w in s.split()} - train_words
    assert unseen == set(_EVAL_ONLY_POSITIVE + _EVAL_ONLY_NEGATIVE)

    spec_task = load_task(DataSpec(task="demo", max_train_samples=300, max_eval_samples=60))
    assert len(spec_task.train) + len(spec_task.selection) == 300 and len(spec_task.eval) == 60


def _bow(sentence: str) -> tuple:
    return tuple(sorted(sentence.split()))


def test_demo_is_not_solvable_by_bag_of_words():
    task = make_demo_task(seed=0)
    examples = task.train + task.selection + task.eval
    # Best accuracy ANY function of the word multiset can reach: the majority label of each
    # group of examples that share a multiset.
    groups = collections.defaultdict(list)
    for ex in examples:
        groups[_bow(ex["sentence"])].append(ex["label"])
    ceiling = sum(max(collections.Counter(g).values()) for g in groups.values()) / len(examples)
    assert ceiling < 0.8
    assert sum(1 for g in groups.values() if len(set(g)) == 2) > 300  # same words, both labels

    # A unigram logistic regression fit on train (gradient descent) stays far below that.
    train, evals = task.train + task.selection, task.eval
    words = sorted({w for ex in examples for w in ex["sentence"].split()})
    vocab = {w: i for i, w in enumerate(words)}

    def features(rows):
        x = np.zeros((len(rows), len(vocab)))
        for k, ex in enumerate(rows):
            for w in ex["sentence"].split():
                x[k, vocab[w]] += 1.0
        return x

    x, y = features(train), np.array([ex["label"] for ex in train], dtype=float)
    w, b = np.zeros(len(vocab)), 0.0
    for _ in range(2000):
        p = 1.0 / (1.0 + np.exp(-(x @ w + b)))
        w -= 0.5 * (x.T @ (p - y) / len(y))
        b -= 0.5 * float(np.mean(p - y))
    train_acc = np.mean((x @ w + b > 0) == y)
    eval_acc = np.mean((features(evals) @ w + b > 0) == np.array([ex["label"] for ex in evals]))
    assert train_acc < 0.7 and eval_acc < 0.65
