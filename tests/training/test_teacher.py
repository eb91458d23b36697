"""The dense teacher is trained once per search directory and reused; a user's teacher is used as is."""

from __future__ import annotations

import pytest

from rayprune.data import DataSpec, load_task, tokenize_task
from rayprune.models import load_model_and_tokenizer
from rayprune.training.teacher import ensure_teacher
from rayprune.training import TrialSettings

from helpers import save_tiny_bert


def test_teacher_is_trained_once_and_reused(tmp_path):
    model_dir = str(save_tiny_bert(tmp_path / "tiny"))
    task = load_task(DataSpec(task="demo", max_train_samples=64, max_eval_samples=32))
    _, tokenizer = load_model_and_tokenizer(model_dir, num_labels=2)
    data = tokenize_task(task, tokenizer, max_seq_length=32)
    settings = TrialSettings(model=model_dir, metric="accuracy", steps=4, batch_size=8, eval_interval=4, threads=1)
    messages = []
    first = ensure_teacher(tmp_path / "search", settings, data, log=messages.append)
    weights = tmp_path / "search" / "teacher" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    second = ensure_teacher(tmp_path / "search", settings, data, log=messages.append)
    assert first == second
    assert weights.stat().st_mtime_ns == stamp  # not retrained
    assert sum("training the dense teacher" in m for m in messages) == 1
    from transformers import AutoModelForSequenceClassification

    teacher = AutoModelForSequenceClassification.from_pretrained(first)
    student, _ = load_model_and_tokenizer(model_dir, num_labels=2)
    # fine-tuned, dense: weights moved away from the pretrained ones and contain no pruning
    moved = any(not a.equal(b) for a, b in zip(teacher.parameters(), student.parameters()))
    assert moved


def test_user_teacher_is_used_as_is(tmp_path):
    given = str(save_tiny_bert(tmp_path / "mine"))
    out = ensure_teacher(tmp_path / "search", None, None, model=given, log=pytest.fail)
    assert out == given and not (tmp_path / "search" / "teacher").exists()
