"""The trial workers' environment (rayprune.search.trial_workers): one malloc arena unless the
user chose otherwise, and the driver's Hugging Face settings; that it reaches the workers of a real search is checked in
test_search_integration.py."""

from __future__ import annotations

from rayprune.search.trial_workers import TRIAL_WORKER_ENV, trial_worker_env


def test_one_malloc_arena_by_default(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert TRIAL_WORKER_ENV == {"MALLOC_ARENA_MAX": "1"}
    assert trial_worker_env()["MALLOC_ARENA_MAX"] == "1"


def test_the_users_value_is_kept(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert trial_worker_env()["MALLOC_ARENA_MAX"] == "4"


def test_the_drivers_hugging_face_settings_are_passed_on(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/data/hf")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert trial_worker_env() == {"MALLOC_ARENA_MAX": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": "/data/hf"}
