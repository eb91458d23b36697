"""``<method>.sparsity_pattern`` and the one-shot methods at spec time: an N:M pattern whose
sparsity the target contradicts, an unquoted ``2:4`` (YAML's base-60 integer), a one-shot method
under a gradual schedule and N:M on a structured method are each one SpecError."""

from __future__ import annotations

import pytest
import yaml

from rayprune.config import parse_spec
from rayprune.config.reading import parse_yaml
from rayprune.errors import SpecError

BASE = {
    "model": "bundled:minilm-l6",
    "data": {"task": "demo"},
    "training": {"steps": 10},
}


def spec(space: dict, **extra) -> dict:
    return {**yaml.safe_load(yaml.safe_dump(BASE)), "space": space, **extra}


def refused(raw, *needles) -> str:
    with pytest.raises(SpecError) as err:
        parse_spec(raw, path="s.yaml")
    message = str(err.value)
    assert message.startswith("s.yaml: ") and "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


@pytest.mark.parametrize("method", ["magnitude", "movement", "wanda", "sparsegpt"])
def test_nm_pattern_with_its_own_sparsity_is_accepted(method):
    parse_spec(spec({"method": method, "target_sparsity": 0.5, f"{method}.sparsity_pattern": "2:4"}), path="s.yaml")
    parse_spec(spec({"method": method, "target_sparsity": 0.75, f"{method}.sparsity_pattern": "1:4"}), path="s.yaml")


def test_a_target_the_pattern_cannot_reach_is_one_error_naming_both_keys():
    refused(spec({"method": "wanda", "target_sparsity": {"choice": [0.5, 0.7]},
                  "wanda.sparsity_pattern": {"choice": ["unstructured", "2:4"]}}),
            "space.target_sparsity", "space.wanda.sparsity_pattern", "0.7", "must be 0.5")


def test_unstructured_goes_with_any_target():
    parse_spec(spec({"method": "wanda", "target_sparsity": {"choice": [0.5, 0.9]},
                     "wanda.sparsity_pattern": "unstructured"}), path="s.yaml")


def test_unquoted_two_colon_four_is_refused_with_the_quoting_hint():
    raw = parse_yaml("model: bundled:minilm-l6\ndata: {task: demo}\ntraining: {steps: 10}\n"
                     "space: {method: magnitude, target_sparsity: 0.5, magnitude.sparsity_pattern: 2:4}\n",
                     source="s.yaml")
    assert raw["space"]["magnitude.sparsity_pattern"] == 124  # YAML 1.1 base 60
    refused(raw, "space.magnitude.sparsity_pattern", "'2:4'")


@pytest.mark.parametrize("bad", ["4:2", "2:2", "0:4", "2-4", "dense"])
def test_malformed_patterns_are_refused(bad):
    refused(spec({"method": "magnitude", "target_sparsity": 0.5, "magnitude.sparsity_pattern": bad}),
            "space.magnitude.sparsity_pattern", "N:M")


def test_one_shot_methods_refuse_a_gradual_schedule():
    refused(spec({"method": "sparsegpt", "target_sparsity": 0.5, "schedule.kind": "cubic"}),
            "space.schedule.kind", "oneshot")


def test_structured_methods_refuse_nm():
    refused(spec({"method": "grain", "target_sparsity": 0.5, "grain.sparsity_pattern": "2:4"},
                 reference={"steps": 5}),
            "space.grain.sparsity_pattern", "unstructured methods only")
