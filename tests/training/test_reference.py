"""The dense reference: trained once per search directory and reused (it is also the teacher);
a user-given model is evaluated, never trained."""

from __future__ import annotations

import json

import pytest

from rayprune.data import DataSpec, load_task, tokenize_task
from rayprune.models import load_model_and_tokenizer
from rayprune.training import TrialSettings
from rayprune.training.reference import ensure_reference
from rayprune.training.teacher import ensure_teacher

from helpers import save_tiny_bert


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model_dir = str(save_tiny_bert(tmp_path_factory.mktemp("tiny") / "tiny"))
    task = load_task(DataSpec(task="demo", max_train_samples=64, max_eval_samples=32))
    _, tokenizer = load_model_and_tokenizer(model_dir, num_labels=2)
    data = tokenize_task(task, tokenizer, max_seq_length=32)
    settings = TrialSettings(model=model_dir, metric="accuracy", steps=4, batch_size=8, eval_interval=4, threads=1)
    return model_dir, data, settings


def test_reference_is_trained_once_reused_and_is_the_teacher(setup, tmp_path):
    model_dir, data, settings = setup
    messages = []
    first = ensure_reference(tmp_path / "search", settings, data, log=messages.append)
    weights = tmp_path / "search" / "reference" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    second = ensure_reference(tmp_path / "search", settings, data, log=messages.append)
    assert second == first and first.trained and first.steps == 4
    assert weights.stat().st_mtime_ns == stamp  # not retrained
    assert sum("training the dense reference" in m for m in messages) == 1
    # its evaluation is what the cache says, and the teacher of distilling trials is this model
    cached = json.loads((tmp_path / "search" / "reference" / "reference.json").read_text())
    assert first.metrics["accuracy"] == cached["metrics"]["accuracy"]
    assert first.metrics["sparsity"] == 0.0
    assert ensure_teacher(tmp_path / "search", settings, data, log=pytest.fail) == first.path
    from transformers import AutoModelForSequenceClassification

    reference = AutoModelForSequenceClassification.from_pretrained(first.path)
    pretrained, _ = load_model_and_tokenizer(model_dir, num_labels=2)
    assert any(not a.equal(b) for a, b in zip(reference.parameters(), pretrained.parameters()))  # fine-tuned


def test_a_given_reference_is_evaluated_not_trained(setup, tmp_path):
    _, data, settings = setup
    given = str(save_tiny_bert(tmp_path / "mine", seed=3))
    messages = []
    reference = ensure_reference(tmp_path / "search", settings, data, model=given, log=messages.append)
    assert reference.path == given and not reference.trained
    assert not (tmp_path / "search" / "reference" / "model.safetensors").exists()
    assert not any("training" in m for m in messages)
    from rayprune.training import evaluate

    model, _ = load_model_and_tokenizer(given, num_labels=2)
    assert reference.metrics == pytest.approx(evaluate(model, data.eval, data, settings.eval_batch_size))
