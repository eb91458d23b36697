"""The JSON Schema: generated from the dataclasses, shipped in the package and in search_spaces/,
all three equal; bounds come from field metadata, so the schema, validation and `rayprune methods`
agree."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from rayprune.config import json_schema, packaged_schema

REPO = Path(__file__).resolve().parents[2]
STALE = "stale: run `rayprune schema --generate > rayprune/config/schema.json` and copy it to search_spaces/"


def test_packaged_and_repository_copies_equal_the_generated_schema():
    schema = json_schema()
    assert json.loads(packaged_schema()) == schema, STALE
    assert json.loads((REPO / "search_spaces" / "schema.json").read_text()) == schema, STALE


def test_bounds_in_the_schema_come_from_field_metadata():
    properties = json_schema()["properties"]
    training = properties["training"]["properties"]
    assert training["learning_rate"]["exclusiveMinimum"] == 0.0 and training["learning_rate"]["maximum"] == 1.0
    assert training["precision"]["enum"] == ["auto", "fp32", "bf16", "fp16"]
    assert properties["data"]["properties"]["max_seq_length"]["maximum"] == 8192
    constraints = properties["objective"]["properties"]["constraints"]["properties"]
    assert set(constraints) == {"min_retained", "max_parameters", "max_latency_ms"}
    space = properties["space"]["properties"]
    assert {"distill.alpha", "distill.temperature", "schedule.start", "mgpp.sigma0"} <= set(space)


def test_the_schema_accepts_the_new_keys_and_refuses_unknown_ones():
    schema = json_schema()
    raw = yaml.safe_load((REPO / "search_spaces" / "quickstart.yaml").read_text())
    raw.update(reference="none", storage="s3://bucket/runs", failure={"max_retries": 1})
    raw["training"].update(precision="bf16", compile=True)
    raw["objective"].update(min_retained=0.9, constraints={"max_parameters": 10})
    raw["space"]["distill.alpha"] = {"uniform": [0.0, 0.5]}
    jsonschema.validate(raw, schema)
    raw["training"]["precision"] = "fp8"
    try:
        jsonschema.validate(raw, schema)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("the schema accepted training.precision: fp8")
