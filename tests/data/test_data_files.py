"""Source files: local csv, tsv, json, jsonl and parquet files, with and without a GLUE preset."""

import json

import pytest

from data_files import numbered_csv, write_csv
from rayprune.data import DataSpec, load_task


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


def test_missing_column_names_it_and_the_available_ones(tmp_path):
    path = numbered_csv(tmp_path, 4)
    spec = DataSpec(train_files=[path], eval_files=[path], text_fields=["text"])
    with pytest.raises(ValueError, match=r"column 'text' not found.*\['sentence', 'label'\]"):
        load_task(spec)
    spec = DataSpec(train_files=[path], eval_files=[path], text_fields=["sentence"],
                    label_field="y")
    with pytest.raises(ValueError, match=r"column 'y' not found"):
        load_task(spec)


def test_metrics_must_fit_the_label_type(tmp_path):
    path = numbered_csv(tmp_path, 6)
    with pytest.raises(ValueError, match="do not apply to classification"):
        load_task(DataSpec(train_files=[path], eval_files=[path], text_fields=["sentence"],
                           metrics=["pearson"]))
    with pytest.raises(ValueError, match="data file not found"):
        load_task(DataSpec(train_files=[str(tmp_path / "none.csv")], eval_files=[path],
                           text_fields=["sentence"]))


@pytest.mark.parametrize(
    "name,content,cause",
    [
        ("bad.jsonl", b'{"sentence": "a", "label": 0}\n{broken\n',
         "ArrowInvalid: JSON parse error"),
        ("bad.csv", b'sentence,label\n"unterminated,1\n', "ParserError"),
        ("latin1.csv", b"sentence,label\ncaf\xe9,1\n", "UnicodeDecodeError"),
        ("bad.parquet", b"PAR1 not really", "ArrowInvalid"),
    ],
)
def test_malformed_files_are_one_clear_error(tmp_path, name, content, cause):
    path = tmp_path / name
    path.write_bytes(content)
    spec = DataSpec(train_files=[str(path)], eval_files=[str(path)], text_fields=["sentence"])
    with pytest.raises(ValueError, match=rf"could not read \[.*{name}'\] as \w+: {cause}"):
        load_task(spec)


@pytest.mark.parametrize("content", ["", "sentence,label\n"])
def test_empty_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_text(content, encoding="utf-8")
    spec = DataSpec(train_files=[str(path)], eval_files=[str(path)], text_fields=["sentence"])
    with pytest.raises(ValueError, match=r"could not read \[.*empty.csv'\] as csv"):
        load_task(spec)
