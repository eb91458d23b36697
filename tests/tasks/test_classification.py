"""The classification task through the tasks/ interface: label names reach the model's config and
Hugging Face's own pipeline, the task rebuilds from search.json, and eval carved by group."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from rayprune.data import DataSpec, load_task
from rayprune.tasks import available_tasks, get_task, task_from_info
from rayprune.tasks.classification import ClassificationTask


def test_the_three_tasks_are_registered():
    assert available_tasks() == ["classification", "extractive_qa", "token_classification"]
    assert get_task("classification") is ClassificationTask
    with pytest.raises(ValueError, match="unknown task type 'nope'.*classification"):
        get_task("nope")


def test_label_names_become_the_heads_id2label():
    config = ClassificationTask(metrics=("accuracy",), label_names=("negative", "positive"), classes=2).model_config()
    assert config["id2label"] == {0: "negative", 1: "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}
    regression = ClassificationTask(metrics=("pearson",), classes=1).model_config()
    assert regression == {"num_labels": 1, "problem_type": "regression"}


def test_the_task_rebuilds_from_what_search_json_records():
    task = ClassificationTask(metrics=("f1", "accuracy"), label_names=("no", "yes"), classes=2)
    again = task_from_info(task.to_info())
    assert again == task
    # search directories from before tasks existed hold num_labels / is_regression only
    old = task_from_info({"num_labels": 1, "is_regression": True, "metrics": ["pearson"]})
    assert old.is_regression and old.kind == "classification"


def test_an_export_answers_with_label_names_in_the_text_classification_pipeline(tiny_dir, demo_data_of, tmp_path):
    """Before tasks, an SST-2 export answered LABEL_0 / LABEL_1."""
    from transformers import pipeline

    from rayprune.models import load_model_and_tokenizer

    data = demo_data_of(40, 20)
    model, tokenizer = load_model_and_tokenizer(tiny_dir, task=data.task)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    classify = pipeline("text-classification", model=str(tmp_path))
    answer = classify("not a good film at all")[0]
    assert answer["label"] in {"negative", "positive"}
    # the task's own evaluation and predictions sample speak the same names
    metrics = data.task.evaluate(model, data.eval, 8)
    assert set(metrics) == {"accuracy"} and 0.0 <= metrics["accuracy"] <= 1.0
    sample = data.task.predictions_sample(model, data.eval)
    assert len(sample) == 20 and {r["gold"] for r in sample} <= {"negative", "positive"}
    assert all(isinstance(r["text"], str) and r["text"] for r in sample)


def _write_grouped_csv(path, groups: int, per_group: int) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sentence", "label", "doc"])
        for g in range(groups):
            for i in range(per_group):
                writer.writerow([f"doc {g} sentence {i}", (g + i) % 2, f"d{g}"])


def test_eval_is_carved_by_group_seeded_and_deterministic(tmp_path):
    path = tmp_path / "all.csv"
    _write_grouped_csv(path, groups=10, per_group=6)
    spec = dict(train_files=[str(path)], text_fields=["sentence"], eval_fraction=0.3, group_field="doc",
                selection_fraction=0.0)
    task = load_task(DataSpec(**spec))
    docs = lambda rows: {r["sentence"].split()[1] for r in rows}  # noqa: E731
    assert len(docs(task.eval)) == 3 and len(docs(task.train)) == 7
    assert not docs(task.eval) & docs(task.train)  # no document on both sides
    assert len(task.eval) == 18 and len(task.train) == 42
    assert any("3 of 10 groups by 'doc'" in note for note in task.notes)
    again = load_task(DataSpec(**spec))
    assert [r["sentence"] for r in again.eval] == [r["sentence"] for r in task.eval]
    other = load_task(DataSpec(**{**spec, "seed": 1}))
    assert docs(other.eval) != docs(task.eval)


def test_a_split_rule_that_leaves_one_side_empty_is_one_clear_error(tmp_path):
    path = tmp_path / "one.csv"
    _write_grouped_csv(path, groups=1, per_group=5)
    with pytest.raises(ValueError, match="at least 2 distinct 'doc' values.*found 1"):
        load_task(DataSpec(train_files=[str(path)], text_fields=["sentence"], eval_fraction=0.5, group_field="doc"))


@pytest.mark.parametrize("spec, message", [
    (dict(task="sst2", metrics=["exact_match"]), "metrics must be a non-empty list from"),
    (dict(train_files=["a.csv"], eval_files=["b.csv"], text_fields=["s"], eval_fraction=0.2),
     "eval_fraction carves the eval split out of train_files"),
    (dict(train_files=["a.csv"], text_fields=["s"], eval_fraction=1.0), "eval_fraction must be a number in"),
    (dict(task="sst2", group_field="title"), "group_field only applies with eval_fraction"),
    (dict(task="sst2", task_type="token_classification"), "is a classification task"),
    (dict(task="demo", task_options={"doc_stride": 3}), "takes no options"),
])
def test_specs_that_do_not_fit_the_task_are_refused(spec, message):
    with pytest.raises((ValueError, TypeError), match=message):
        DataSpec(**spec)


def test_carving_keeps_every_row_once():
    from rayprune.data.splits import eval_mask_by_group

    keys = ["a", "b", "a", None, "c", "b", None]
    mask = eval_mask_by_group(keys, 0.4, 7, where="x", group_field="g")
    assert mask.shape == (7,) and mask.dtype == np.bool_
    for key in ("a", "b", "c"):  # a group lands on one side only
        assert len({bool(m) for k, m in zip(keys, mask) if k == key}) == 1
    assert 0 < mask.sum() < 7
