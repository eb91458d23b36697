"""`trust_remote_code` (issue 11): off unless the space file sets it, and what the file says
reaches every model load: the preflight, a given reference, the trial loop, export and
`rayprune train` on an exported config.

Each load goes through a recorder that notes which module called the loader and with which
``trust_remote_code``, then loads the tiny model for real (it has no remote code, so either
value loads it)."""

from __future__ import annotations

import dataclasses
import json
import sys

import pytest
import yaml

import rayprune.export
import rayprune.models
import rayprune.training.checkpoint
import rayprune.training.loop
from rayprune.config import parse_spec
from rayprune.data import DataSpec, load_task, tokenize_task
from rayprune.errors import SpecError
from rayprune.training import TrialConfig, TrialSettings, run_training


REAL_LOADER = rayprune.models.load_model_and_tokenizer
#: Modules that import the loader by name at import time (the others look it up in rayprune.models).
BOUND_BY_NAME = (rayprune.export, rayprune.training.checkpoint, rayprune.training.loop)


@pytest.fixture(scope="module")
def demo_data(tiny_dir):
    task = load_task(DataSpec(task="demo", max_train_samples=48, max_eval_samples=16))
    _, tokenizer = REAL_LOADER(tiny_dir, num_labels=task.num_labels)
    return tokenize_task(task, tokenizer, max_seq_length=32)


@pytest.fixture
def loads(monkeypatch) -> list[tuple[str, bool]]:
    """``(calling module, trust_remote_code)`` of every model load from here on."""
    calls: list[tuple[str, bool]] = []

    def recording_loader(name, **kwargs):
        calls.append((sys._getframe(1).f_globals["__name__"], kwargs.get("trust_remote_code", False)))
        return REAL_LOADER(name, **kwargs)

    monkeypatch.setattr(rayprune.models, "load_model_and_tokenizer", recording_loader)
    for module in BOUND_BY_NAME:
        monkeypatch.setattr(module, "load_model_and_tokenizer", recording_loader)
    return calls


def by_module(calls, module: str) -> list[bool]:
    return [trust for caller, trust in calls if caller == module]


def space(tiny_dir: str, **top) -> dict:
    return {"name": "remote", "model": tiny_dir, "data": {"task": "demo", "max_train_samples": 48,
                                                          "max_eval_samples": 16, "max_seq_length": 32},
            "training": {"steps": 2, "eval_interval": 2, "batch_size": 8},
            "space": {"method": "magnitude", "target_sparsity": 0.5}, **top}


def settings_for(tiny_dir: str, **changes) -> TrialSettings:
    return TrialSettings(model=tiny_dir, metric="accuracy", steps=2, eval_interval=2, batch_size=8, threads=1,
                         **changes)


@pytest.mark.parametrize("top, expected", [({}, False), ({"trust_remote_code": False}, False),
                                           ({"trust_remote_code": True}, True)])
def test_the_space_file_decides_what_the_preflight_loads_with_and_the_trials_get(tiny_dir, loads, tmp_path,
                                                                                   top, expected):
    from rayprune.search.preflight import prepare_search

    spec = parse_spec(space(tiny_dir, **top), path="remote.yaml")
    prepared = prepare_search(spec, output=tmp_path, log=lambda *a: None)
    assert by_module(loads, "rayprune.search.preflight") == [expected]
    assert prepared.settings.trust_remote_code is expected  # what trials, the reference and search.json get
    assert dataclasses.asdict(prepared.settings)["trust_remote_code"] is expected


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_anything_but_a_boolean_is_one_clean_error(tiny_dir, value):
    with pytest.raises(SpecError, match=r"^remote.yaml: trust_remote_code: expected true or false, got "):
        parse_spec(space(tiny_dir, trust_remote_code=value), path="remote.yaml")


@pytest.mark.parametrize("trust", [False, True])
def test_a_given_reference_model_is_loaded_with_the_setting(tiny_dir, demo_data, loads, tmp_path, trust):
    from rayprune.training.reference import ensure_reference

    ensure_reference(tmp_path, settings_for(tiny_dir, trust_remote_code=trust), demo_data, model=tiny_dir,
                     log=lambda *a: None)
    assert by_module(loads, "rayprune.training.reference") == [trust]


def test_the_trial_loop_loads_with_the_setting(tiny_dir, demo_data, loads):
    """The trials and the trained dense reference both load through run_training."""
    config = TrialConfig.from_flat({"method": "magnitude", "target_sparsity": 0.5}, settings_for(tiny_dir))
    run_training(config, settings_for(tiny_dir, trust_remote_code=True), demo_data)
    assert by_module(loads, "rayprune.training.loop") == [True]


def test_the_trial_loop_loads_without_remote_code_by_default(tiny_dir, demo_data, loads):
    config = TrialConfig.from_flat({"method": "magnitude", "target_sparsity": 0.5}, settings_for(tiny_dir))
    run_training(config, settings_for(tiny_dir), demo_data)
    assert by_module(loads, "rayprune.training.loop") == [False]


@pytest.mark.parametrize("trust", [False, True])
def test_export_and_rayprune_train_load_with_what_the_search_ran_with(tiny_dir, demo_data, loads, tmp_path,
                                                                       monkeypatch, trust):
    """A search directory of one trained trial (its checkpoint written by the real loop), exported,
    then re-run from the exported config.yaml."""
    from rayprune.export import export_search
    from rayprune.training.standalone import train_from_config

    settings = settings_for(tiny_dir, trust_remote_code=trust)
    flat = {"method": "magnitude", "target_sparsity": 0.5}
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()

    def report(metrics, writer):
        if writer is not None:
            writer(checkpoint)

    _, _, metrics = run_training(TrialConfig.from_flat(flat, settings), settings, demo_data, report=report)
    meta = {"settings": dataclasses.asdict(settings),
            "spec": {"data": {"task": "demo", "max_train_samples": 48, "max_eval_samples": 16, "max_seq_length": 32},
                     "trust_remote_code": trust},
            "data": {"task": "demo", "num_labels": 2, "is_regression": False, "data_dir": None}}
    row = {"trial_id": "t1", "method": "magnitude", "accuracy": metrics["accuracy"], "status": "complete",
           "verdict": "ok", "checkpoint": str(checkpoint), "config": json.dumps(flat)}
    monkeypatch.setattr(rayprune.export, "load_search_dir", lambda search_dir: (meta, [row], [row]))
    loads.clear()

    [entry] = export_search(tmp_path / "search", tmp_path / "out", log=lambda *a: None)
    assert by_module(loads, "rayprune.export") == [trust]  # the dense model (its parameter count)
    assert by_module(loads, "rayprune.training.checkpoint") == [trust]  # the trial rebuilt from its checkpoint
    card = (entry / "README.md").read_text()
    assert ("The search ran with `trust_remote_code: true`" in card) is trust
    assert json.loads((entry / "rayprune.json").read_text())["trust_remote_code"] is trust
    config = yaml.safe_load((entry / "config.yaml").read_text())
    assert config["training"]["trust_remote_code"] is trust

    loads.clear()
    train_from_config(entry / "config.yaml")
    assert by_module(loads, "rayprune.training.standalone") == [trust]


def test_rayprune_train_refuses_a_non_boolean_setting(tmp_path):
    from rayprune.training.standalone import train_from_config

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model": "m", "data": {"task": "demo"}, "metric": "accuracy",
                                      "training": {"steps": 2, "trust_remote_code": "yes"}, "trial": {}}))
    with pytest.raises(SpecError, match=rf"^{config}: training.trust_remote_code: expected true or false"):
        train_from_config(config)
