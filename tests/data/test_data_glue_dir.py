"""Source glue_dir: the official GLUE TSVs (real files from ../shared where present, and
hand-written files in the official layout of the other tasks)."""

import collections
from pathlib import Path

import pytest

from data_files import GLUE_DIR, needs_glue
from rayprune.data import (
    DATA_DIR_ENV,
    GLUE_TASKS,
    DataSpec,
    find_local_glue_dir,
    load_task,
    read_glue_tsv,
)


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
