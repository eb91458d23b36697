"""The trial workers' environment (rayprune.search.trial_workers): one malloc arena unless the
user chose otherwise; that it reaches the workers of a real search is checked in
test_search_integration.py."""

from __future__ import annotations

from rayprune.search.trial_workers import TRIAL_WORKER_ENV, trial_worker_env


def test_one_malloc_arena_by_default(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert TRIAL_WORKER_ENV == {"MALLOC_ARENA_MAX": "1"}
    assert trial_worker_env() == {"MALLOC_ARENA_MAX": "1"}


def test_the_users_value_is_kept(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert trial_worker_env() == {"MALLOC_ARENA_MAX": "4"}
