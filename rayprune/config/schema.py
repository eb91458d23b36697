"""The JSON Schema (draft 2020-12) of the search-space file, generated from the same dataclasses
that validate it, for editors and CI linters.

:func:`json_schema` reads the sections, :class:`~rayprune.data.spec.DataSpec`, the sparsity
schedule and every registered method's ``Options`` (so it imports the methods, and torch).
``rayprune schema`` prints the copy shipped in the package (:func:`packaged_schema`), which needs
neither; a test keeps that copy and ``search_spaces/schema.json`` equal to the generated one.
Regenerate both with::

    rayprune schema --generate > rayprune/config/schema.json
    cp rayprune/config/schema.json search_spaces/schema.json

:func:`rayprune.config.parse_spec` remains the authority: it also checks what a schema cannot
say (cross-field constraints, corners of the ranges).
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from typing import Any

from rayprune.config.fields import field_schema, type_hints

__all__ = ["json_schema", "packaged_schema", "section_schema"]

_PACKAGED = "schema.json"


def section_schema(cls: type, description: str = "") -> dict:
    """An object schema of one dataclass: its fields' types, bounds and help, nothing else."""
    hints = type_hints(cls)
    properties = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            properties[f.name] = section_schema(hint, f.metadata.get("help", ""))
        else:
            properties[f.name] = field_schema(hint, f.metadata)
    schema: dict[str, Any] = {"type": ["object", "null"], "additionalProperties": False, "properties": properties}
    if description:
        schema["description"] = description
    return schema


def _searchable(value_schema: dict) -> dict:
    """A space entry: a constant or a distribution over such values."""
    plain = {k: v for k, v in value_schema.items() if k != "description"}
    bounds = {"type": "array", "prefixItems": [plain, plain], "minItems": 2, "maxItems": 2}
    entry: dict[str, Any] = {"anyOf": [
        plain,
        {"type": "object", "additionalProperties": False, "minProperties": 1, "maxProperties": 1,
         "properties": {"choice": {"type": "array", "minItems": 1, "items": plain},
                        "uniform": bounds, "loguniform": bounds, "int": bounds}},
    ]}
    if "description" in value_schema:
        entry["description"] = value_schema["description"]
    return entry


def _field(cls: type, name: str) -> dict:
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return field_schema(type_hints(cls)[name], f.metadata)


def json_schema() -> dict:
    """The JSON Schema of a search-space file, from the dataclasses and the method registry."""
    from rayprune.config.sections import (
        SEARCHABLE_TRAINING_KEYS,
        BudgetSection,
        DistillOptions,
        FailureSection,
        ObjectiveSection,
        ReferenceSection,
        ResourcesSection,
        SchedulerSection,
        SearchSection,
        SparsityTarget,
        TrainingSection,
    )
    from rayprune.config.space import SCHEDULE_FIELDS
    from rayprune.config.spec import TOP_KEYS
    from rayprune.data.spec import DataSpec
    from rayprune.methods import available_methods, get_method
    from rayprune.methods.schedules import SparsitySchedule

    space: dict[str, Any] = {
        "method": _searchable({"enum": available_methods()}),
        "target_sparsity": _searchable(_field(SparsityTarget, "target_sparsity")),
    }
    for key in SEARCHABLE_TRAINING_KEYS:
        space[key] = _searchable(_field(TrainingSection, key))
    for name in SCHEDULE_FIELDS:
        space[f"schedule.{name}"] = _searchable(_field(SparsitySchedule, name))
    for f in dataclasses.fields(DistillOptions):
        space[f"distill.{f.name}"] = _searchable(_field(DistillOptions, f.name))
    for method in available_methods():
        options = get_method(method).Options
        for f in dataclasses.fields(options):
            space[f"{method}.{f.name}"] = _searchable(_field(options, f.name))

    from rayprune.tasks import available_tasks

    data = section_schema(DataSpec, TOP_KEYS["data"])
    data["properties"]["task_type"] = {
        "enum": [*available_tasks(), None],
        "description": "what the head does (rayprune.tasks); default classification, or the preset's"}
    data["properties"]["task_options"] = {
        "type": ["object", "null"],
        "description": "the task type's own options (extractive_qa: doc_stride, max_answer_length, n_best_size; "
                       "token_classification: tag_scheme), checked by the task"}
    reference = section_schema(ReferenceSection, TOP_KEYS["reference"])
    reference_or_none = {"anyOf": [reference, {"const": "none"}], "description": TOP_KEYS["reference"]}
    properties = {
        "name": {"type": "string", "minLength": 1, "pattern": "^[^/\\\\]+$", "description": TOP_KEYS["name"]},
        "model": {"type": "string", "minLength": 1, "description": TOP_KEYS["model"]},
        "trust_remote_code": {"type": "boolean", "description": TOP_KEYS["trust_remote_code"]},
        "data": data,
        "objective": section_schema(ObjectiveSection, TOP_KEYS["objective"]),
        "training": section_schema(TrainingSection, TOP_KEYS["training"]),
        "budget": section_schema(BudgetSection, TOP_KEYS["budget"]),
        "resources": section_schema(ResourcesSection, TOP_KEYS["resources"]),
        "scheduler": section_schema(SchedulerSection, TOP_KEYS["scheduler"]),
        "search": section_schema(SearchSection, TOP_KEYS["search"]),
        "reference": reference_or_none,
        "teacher": {**reference_or_none, "description": TOP_KEYS["teacher"]},
        "storage": {"type": ["string", "null"], "description": TOP_KEYS["storage"]},
        "failure": section_schema(FailureSection, TOP_KEYS["failure"]),
        "space": {"type": "object", "additionalProperties": False, "required": ["method", "target_sparsity"],
                  "properties": space, "description": TOP_KEYS["space"]},
        "points_to_evaluate": {"type": ["array", "null"], "items": {"type": "object", "minProperties": 1},
                               "description": TOP_KEYS["points_to_evaluate"]},
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "rayprune search space",
        "type": "object",
        "additionalProperties": False,
        "required": ["training", "space"],
        "properties": properties,
    }


def packaged_schema() -> str:
    """The schema shipped with the package, as text (no torch needed to print it)."""
    return resources.files("rayprune.config").joinpath(_PACKAGED).read_text(encoding="utf-8")

