"""Every mistake the issue lists is one SpecError naming the file, the key and what is allowed;
cross-field mistakes are caught at spec time; defaults have one home."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from rayprune.config import (
    DistillOptions,
    ReferenceSection,
    TrainingSection,
    load_spec,
    parse_spec,
    split_key,
)
from rayprune.errors import SpecError

REPO = Path(__file__).resolve().parents[2]

BASE = {
    "model": "bundled:minilm-l6",
    "data": {"task": "demo"},
    "training": {"steps": 10},
    "space": {"method": "magnitude", "target_sparsity": 0.5},
}


def spec_with(**changes):
    """BASE with ``{"a/b": value}`` set (``None`` values are set, not removed)."""
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    for dotted, value in changes.items():
        node = raw
        keys = dotted.split("/")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return raw


def refused(raw, *needles, path="s.yaml") -> str:
    """The SpecError message for ``raw``; asserts it is one line naming the file and each needle."""
    with pytest.raises(SpecError) as err:
        parse_spec(raw, path=path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


def refused_file(path: Path, *needles) -> str:
    """:func:`refused` for a file on disk (what YAML itself reads matters)."""
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


# ------------------------------------------------------------------------------ cross-field


def test_mgpp_spike_variance_above_the_slab_is_refused_naming_both_keys():
    refused(spec_with(**{"space/method": "mgpp", "space/mgpp.sigma0": 0.04, "space/mgpp.sigma1": 0.02}),
            "space.mgpp.sigma0", "space.mgpp.sigma1", "sigma0 < sigma1")


def test_overlapping_mgpp_ranges_are_refused_at_their_corners():
    refused(spec_with(**{"space/method": "mgpp", "space/mgpp.sigma0": {"loguniform": [1e-3, 0.1]},
                         "space/mgpp.sigma1": {"loguniform": [1e-2, 1.0]}}),
            "space.mgpp.sigma0", "space.mgpp.sigma1", "sigma0=0.1", "sigma1=0.01")
    # disjoint ranges: every trial is valid
    parse_spec(spec_with(**{"space/method": "mgpp", "space/mgpp.sigma0": {"loguniform": [1e-12, 1e-7]},
                            "space/mgpp.sigma1": {"loguniform": [1e-2, 1.0]}}), path="s.yaml")


def test_schedule_end_before_the_methods_default_start_is_refused():
    message = refused(spec_with(**{"space/method": "pins", "space/schedule.end": 0.05}),
                      "space.schedule.end", "schedule.start=0.064", "start <= end")
    assert "target_sparsity" not in message  # only the keys that matter are named


def test_schedule_start_after_end_is_refused():
    refused(spec_with(**{"space/schedule.start": 0.8, "space/schedule.end": 0.5}),
            "space.schedule.start", "space.schedule.end", "start <= end")
    refused(spec_with(**{"space/schedule.start": {"uniform": [0.1, 0.8]}, "space/schedule.end": 0.5}),
            "schedule.start=0.8", "start <= end")


def test_a_ramp_that_starts_above_the_target_is_refused():
    refused(spec_with(**{"space/schedule.initial_sparsity": 0.999, "space/target_sparsity": 0.5}),
            "space.schedule.initial_sparsity", "initial_sparsity=0.999", "initial_sparsity <= target_sparsity")
    # at a corner of a range: the low end of target_sparsity
    refused(spec_with(**{"space/schedule.initial_sparsity": 0.5, "space/target_sparsity": {"uniform": [0.3, 0.9]}}),
            "target_sparsity=0.3", "initial_sparsity <= target_sparsity")
    refused(spec_with(**{"space/schedule.initial_sparsity": {"choice": [0.0, 0.95]},
                         "space/target_sparsity": {"choice": [0.9, 0.99]}, "space/schedule.kind": "linear"}),
            "schedule.initial_sparsity=0.95", "target_sparsity=0.9", "linear ramp")
    # MGPP's own default (0.3) above the target: the message names the default
    refused(spec_with(**{"space/method": "mgpp", "space/target_sparsity": 0.2}),
            "the defaults of mgpp", "schedule.initial_sparsity=0.3", "initial_sparsity <= target_sparsity")
    # up to the target is fine, and constant / oneshot never ramp
    parse_spec(spec_with(**{"space/schedule.initial_sparsity": 0.5, "space/target_sparsity": 0.5}), path="s.yaml")
    for kind in ("constant", "oneshot"):
        parse_spec(spec_with(**{"space/schedule.initial_sparsity": 0.9, "space/schedule.kind": kind}), path="s.yaml")


def test_a_point_is_checked_with_the_space_around_it():
    raw = spec_with(**{"space/method": "mgpp", "space/mgpp.sigma0": {"choice": [1e-9, 0.5]},
                       "space/mgpp.sigma1": 0.1})
    refused(raw, "space.mgpp.sigma0", "sigma0=0.5")
    raw = spec_with(**{"space/method": "mgpp", "space/mgpp.sigma1": {"choice": [0.01, 0.1]}})
    raw["points_to_evaluate"] = [{"mgpp.sigma1": 0.1}]
    parse_spec(raw, path="s.yaml")


def test_a_distilling_method_needs_the_reference():
    refused(spec_with(**{"space/method": "grain", "reference": "none"}), "reference", "grain")
    refused(spec_with(**{"space/distill.alpha": {"uniform": [0.0, 0.5]}, "reference": "none"}),
            "space.distill.alpha", "reference")
    parse_spec(spec_with(**{"space/distill.alpha": 0.0, "reference": "none"}), path="s.yaml")


# ------------------------------------------------------------------------------ the fuzz cases


@pytest.mark.parametrize("where", ["", "training/", "data/", "space/", "objective/constraints/"])
def test_unknown_keys_of_different_types_are_one_error(where):
    raw = spec_with()
    node = raw
    for k in [k for k in where.split("/") if k]:
        node = node.setdefault(k, {})
    node[""] = 1
    node[None] = 2
    message = refused(raw, "unknown key")
    assert "allowed" in message


_T = "training: {steps: 10}\n"
_S = "space: {method: magnitude, target_sparsity: 0.5}\n"
_LR = "space: {method: magnitude, target_sparsity: 0.5, learning_rate: %s}\n"


@pytest.mark.parametrize("text, needles", [
    ("training: {steps: 10, learning_rate: 1e-4}\n" + _S,
     ["training.learning_rate", "got str '1e-4'", "YAML 1.1 reads 1e-4 as text: write 1.0e-4"]),
    ("training: {steps: 1e3}\n" + _S, ["training.steps", "write 1.0e+3"]),
    ("training: {steps: 10, learning_rate: 1.0e4}\n" + _S, ["write 1.0e+4"]),
    ("training: {steps: 10, learning_rate: '0.001'}\n" + _S, ["remove the quotes"]),
    (_T + _LR % "1e-4", ["space.learning_rate", "write 1.0e-4"]),
    (_T + _LR % "{loguniform: [1e-5, 1.0e-3]}", ["space.learning_rate.loguniform[0]", "write 1.0e-5"]),
    (_T + _LR % "{choice: [1.0e-5, 2e-4]}", ["space.learning_rate", "write 2.0e-4"]),
    (_T + _LR % "{loguniform: [1.0e-5, 1.0e-3]}" + "points_to_evaluate: [{learning_rate: 1e-4}]\n",
     ["points_to_evaluate[0].learning_rate", "write 1.0e-4"]),
])
def test_a_number_yaml_reads_as_text_says_how_to_write_it(tmp_path, text, needles):
    path = tmp_path / "s.yaml"
    path.write_text("data: {task: demo}\n" + text)
    refused_file(path, *needles)


def test_a_word_in_a_number_field_gets_no_number_hint():
    message = refused(spec_with(**{"training/learning_rate": "fast"}), "training.learning_rate")
    assert "YAML 1.1" not in message and "quotes" not in message


LONG = "k" * 5000


@pytest.mark.parametrize("where, key, value", [
    ("", LONG, 1), ("training/", LONG, 1), ("data/", LONG, 1), ("objective/constraints/", LONG, 1),
    ("space/", LONG, 1), ("space/", f"{LONG}.x", 1), ("space/", f"mgpp.{LONG}", 1),
    ("space/", "method", "mgpp"),  # with mgpp.<long> below
    ("training/", LONG, float("nan")),
    ("points_to_evaluate", LONG, 0.5),
])
def test_a_long_unknown_key_is_shortened_in_the_message(where, key, value):
    raw = spec_with()
    if where == "points_to_evaluate":
        raw["points_to_evaluate"] = [{key: value}]
    else:
        node = raw
        for k in [k for k in where.split("/") if k]:
            node = node.setdefault(k, {})
        node[key] = value
        if key == "method":
            node[f"mgpp.{LONG}"] = 1
    message = refused(raw, "kkkkk...")
    assert len(message) < 800 and LONG not in message, message[:1000]


@pytest.mark.parametrize("value", [None, "0.7", [0.7], True])
def test_points_to_evaluate_value_of_the_wrong_type_against_a_range(value):
    raw = spec_with(**{"space/target_sparsity": {"uniform": [0.5, 0.9]}})
    raw["points_to_evaluate"] = [{"target_sparsity": value}]
    refused(raw, "points_to_evaluate[0].target_sparsity", "outside uniform[0.5, 0.9]")


@pytest.mark.parametrize("entry", [None, [], "x", 3])
def test_points_to_evaluate_entries_must_be_mappings(entry):
    raw = spec_with()
    raw["points_to_evaluate"] = [entry]
    refused(raw, "points_to_evaluate[0]", "mapping")


def test_a_point_cannot_contradict_a_constant():
    raw = spec_with()
    raw["points_to_evaluate"] = [{"target_sparsity": 0.7}]
    refused(raw, "points_to_evaluate[0].target_sparsity", "fixes it to 0.5")


@pytest.mark.parametrize("key", [
    "training/epochs", "training/learning_rate", "training/warmup_ratio", "resources/cpu", "resources/gpu",
    "scheduler/reduction_factor", "space/target_sparsity", "reference/learning_rate",
])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_refused(key, value):
    raw = spec_with(**{key: value})
    if key == "training/epochs":
        del raw["training"]["steps"]
    refused(raw, key.replace("/", "."), "finite")


def test_non_finite_distribution_bound_is_refused():
    refused(spec_with(**{"space/learning_rate": {"loguniform": [1e-5, float("inf")]}}),
            "space.learning_rate.loguniform[1]", "finite")
    refused(spec_with(**{"space/learning_rate": {"loguniform": [float("nan"), 1e-3]}}),
            "space.learning_rate.loguniform[0]", "finite")


def test_huge_integers_are_refused():
    refused(spec_with(**{"training/steps": 10**400}), "training.steps", "2**63")
    refused(spec_with(**{"space/seed": {"int": [0, 10**400]}}), "space.seed.int[1]", "2**63")
    refused(spec_with(**{"training/steps": 10**12}), "training.steps", "[1, 1000000000]")


@pytest.mark.parametrize("key, value, allowed", [
    ("training/seed", "abc", "integer"),
    ("training/seed", -1, "[0, 4294967295]"),
    ("training/threads_per_trial", -1, "[1, 1024]"),
    ("training/max_grad_norm", "abc", "number"),
    ("training/batch_size", 2.5, "integer"),
    ("training/precision", "fp8", "'bf16'"),
    ("training/compile", "yes", "true or false"),
    ("data/max_seq_length", 100000, "[8, 8192]"),
    ("search/seed", -3, "[0, 4294967295]"),
    ("failure/max_retries", -1, "[0, 100]"),
    ("objective/min_retained", 0, "(0, 10]"),
    ("objective/metric", "acc", "'accuracy'"),
    ("objective/constraints/max_parameters", 0, ">= 1"),
    ("objective/constraints/max_latency_ms", -1, "> 0"),
])
def test_bad_values_name_key_and_allowed(key, value, allowed):
    refused(spec_with(**{key: value}), key.replace("/", "."), allowed)


@pytest.mark.parametrize("section", ["teacher", "reference"])
@pytest.mark.parametrize("key, value, allowed", [
    ("model", 3, "string"), ("model", " ", "empty"), ("steps", 0, "[1, "), ("steps", "many", "integer"),
    ("learning_rate", -1.0, "(0, 1]"), ("learning_rate", "fast", "number"), ("colour", 1, "allowed"),
])
def test_every_reference_key_is_validated(section, key, value, allowed):
    refused(spec_with(**{f"{section}/{key}": value}), f"{section}", key, allowed)


@pytest.mark.parametrize("key", ["objective/min_retained", "objective/constraints/min_retained"])
def test_a_retained_floor_needs_the_reference(key):
    refused(spec_with(**{key: 0.9, "reference": "none"}), key.replace("/", "."), "reference")


def test_reference_and_teacher_together_are_refused():
    refused(spec_with(**{"teacher/steps": 5, "reference/steps": 5}), "teacher", "reference")


@pytest.mark.parametrize("name", [3, None, "", "a/b", "..", ".", "/abs", "a\\b", "tab\there", "x" * 200,
                                  "a\x85b", "a\x9bb", "a\u202eb", "a\u2066b", "a\u200bb", "a\u2028b",
                                  " ", "   ", "\u3000", "\xa0", " lead", "trail "])
def test_name_must_be_a_plain_directory_name(name):
    refused(spec_with(name=name), "name")


@pytest.mark.parametrize("name", ["quickstart", "run 2", "é✓-search", "日本語", "a.b"])
def test_a_plain_name_may_be_unicode_with_inner_spaces(name):
    assert parse_spec(spec_with(name=name), path="s.yaml").name == name


def test_name_defaults_to_the_file_stem(tmp_path):
    path = tmp_path / "my_search.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert load_spec(path).name == "my_search"


@pytest.mark.parametrize("storage, ok", [
    (None, True), ("/mnt/shared/runs", True), ("s3://bucket/runs", True), ("file:///tmp/x", True),
    (3, False), ("", False), ("://nowhere", False),
    ("gs://bucket/runs", True), ("abfss://c@acct.dfs.core.windows.net/runs", True), ("hdfs://nn:8020/runs", True),
    ("javascript://x", False), ("http://host/runs", False), ("S3://bucket/runs", False), ("az://c/runs", False),
])
def test_storage_is_a_path_or_a_uri(storage, ok):
    raw = spec_with(storage=storage)
    if ok:
        assert parse_spec(raw, path="s.yaml").storage == storage
    else:
        refused(raw, "storage")


@pytest.mark.parametrize("storage", ["javascript://x", "S3://bucket/runs"])
def test_a_storage_scheme_ray_cannot_write_is_refused_naming_the_allowed_ones(tmp_path, storage):
    from rayprune.search.storage import resolve_storage

    refused(spec_with(storage=storage), "storage", "allowed: s3://, gs://", "or a path")
    with pytest.raises(SpecError, match="allowed: s3://, gs://"):  # the same list for --storage
        resolve_storage(storage, tmp_path, "x")


def test_a_range_over_an_integer_or_a_word_is_refused():
    refused(spec_with(**{"space/batch_size": {"uniform": [8, 32]}}), "space.batch_size", "int")
    refused(spec_with(**{"space/magnitude.selection": {"uniform": [0, 1]}}), "space.magnitude.selection", "choice")


def test_the_new_contract_keys_load_typed():
    raw = spec_with(**{
        "objective/metric": "accuracy", "objective/min_metric": 0.6, "objective/min_retained": 0.9,
        "objective/constraints/max_parameters": 1000, "objective/constraints/max_latency_ms": 5,
        "training/precision": "bf16", "training/compile": True, "failure/max_retries": 1,
        "storage": "s3://b/p", "space/distill.alpha": {"uniform": [0.0, 0.5]}, "space/distill.temperature": 4,
        "reference/steps": 7,
    })
    spec = parse_spec(raw, path="s.yaml")
    assert spec.objective.min_retained == 0.9 and spec.objective.constraints.max_parameters == 1000
    assert spec.objective.constraints.max_latency_ms == 5.0 and spec.objective.constraints.min_retained is None
    assert spec.training.precision == "bf16" and spec.training.compile is True
    assert spec.failure.max_retries == 1 and spec.storage == "s3://b/p"
    assert spec.reference == ReferenceSection(steps=7)
    assert parse_spec(spec_with(reference="none"), path="s.yaml").reference is None
    assert parse_spec(spec_with(teacher="none"), path="s.yaml").reference is None
    assert parse_spec(spec_with(), path="s.yaml").failure.max_retries == 3


# ------------------------------------------------------------------------------ one home for defaults


def test_trial_settings_take_their_defaults_from_the_training_section():
    from rayprune.training import TrialSettings

    settings = TrialSettings(model="m", metric="accuracy", steps=10)
    section = {f.name: f.default for f in dataclasses.fields(TrainingSection)}
    for f in dataclasses.fields(TrialSettings):
        if f.name in section and f.name != "steps":  # required in the settings: resolved from epochs
            assert getattr(settings, f.name) == section[f.name], f.name
    built = TrialSettings.from_section(TrainingSection(steps=10, learning_rate=3e-4, precision="fp32"),
                                       model="m", metric="accuracy", steps=10, threads=2)
    assert (built.learning_rate, built.precision, built.threads, built.eval_interval) == (3e-4, "fp32", 2, 10)


def test_split_key_is_the_one_reader_of_dotted_keys():
    from rayprune.training import TrialConfig, TrialSettings

    assert split_key("mgpp.sigma0") == ("mgpp", "sigma0")
    assert split_key("learning_rate") == (None, "learning_rate")
    assert split_key("schedule.start") == ("schedule", "start")
    config = TrialConfig.from_flat({"method": "mgpp", "target_sparsity": 0.5, "mgpp.sigma0": 1e-9,
                                    "schedule.end": 0.6, "distill.alpha": 0.2},
                                   TrialSettings(model="m", metric="accuracy", steps=10))
    assert config.method_options == {"sigma0": 1e-9} and config.schedule == {"end": 0.6}
    assert config.distill == {"alpha": 0.2}


def test_distill_defaults_are_off():
    assert DistillOptions().alpha == 0.0
    with pytest.raises(ValueError, match="alpha"):
        DistillOptions(alpha=2.0)


# ------------------------------------------------------------------------------ the teacher's learning rate


def test_the_reference_trains_at_the_trials_learning_rate_unless_given():
    spec = load_spec(REPO / "search_spaces" / "grain.yaml")
    assert spec.training.learning_rate == 1e-4
    assert spec.reference.learning_rate is None
    assert spec.reference.budget(500, spec.training.learning_rate) == (500, 1e-4)
    given = parse_spec(spec_with(**{"teacher/learning_rate": 3e-5, "teacher/steps": 40}), path="s.yaml")
    assert given.reference.budget(10, 1e-4) == (40, 3e-5)


def test_shipped_spaces_carry_their_max_seq_length_as_a_typed_field():
    spec = load_spec(REPO / "search_spaces" / "quickstart.yaml")
    assert spec.data.max_seq_length == 48
    assert parse_spec(spec_with(), path="s.yaml").data.max_seq_length == 128


# ------------------------------------------------------------------------------ issue 11


def test_trust_remote_code_is_off_unless_the_file_says_true():
    assert parse_spec(spec_with(), path="s.yaml").trust_remote_code is False
    assert parse_spec(spec_with(trust_remote_code=False), path="s.yaml").trust_remote_code is False
    assert parse_spec(spec_with(trust_remote_code=True), path="s.yaml").trust_remote_code is True


@pytest.mark.parametrize("value", [None, 1, 0, "true", "yes", [True], {"on": True}])
def test_trust_remote_code_takes_a_boolean_only(value):
    refused(spec_with(trust_remote_code=value), "s.yaml: trust_remote_code: ", "true or false")


def test_trust_remote_code_misplaced_under_training_is_an_unknown_key():
    refused(spec_with(**{"training/trust_remote_code": True}), "training.trust_remote_code", "unknown key")


@pytest.mark.parametrize("gpu", [0, 0.25, 0.5, 1, 1.0, 2, 4.0, 64])
def test_gpu_fractions_up_to_one_and_whole_gpus_above(gpu):
    assert parse_spec(spec_with(**{"resources/gpu": gpu}), path="s.yaml").resources.gpu == gpu


@pytest.mark.parametrize("gpu", [1.5, 2.25, 63.9])
def test_a_fractional_gpu_count_above_one_is_refused(gpu):
    message = refused(spec_with(**{"resources/gpu": gpu}), "s.yaml: resources.gpu: ", f"{gpu:g}",
                      "a fraction up to 1", "whole number")
    assert "Traceback" not in message


def test_a_fractional_gpu_count_is_refused_from_the_file_before_anything_loads(tmp_path):
    path = tmp_path / "gpus.yaml"
    path.write_text(yaml.safe_dump(spec_with(**{"resources/gpu": 1.5})))
    with pytest.raises(SpecError, match=rf"^{path}: resources.gpu: 1.5 is not allowed"):
        load_spec(path, check=False)  # the structural pass, before the methods (and torch) load
