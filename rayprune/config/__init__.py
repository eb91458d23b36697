"""The search spec: a space file parsed, validated and typed before any trial starts.

Modules (none imports torch or ray except ``checks`` and ``json_schema``, which read the methods):

* ``fields``: bounds and help in dataclass field metadata; the one value checker; ``split_key``.
* ``sections``: one dataclass per YAML section (training, budget, resources, scheduler, search,
  reference, objective + constraints, failure, distill); their defaults are THE defaults.  The
  ``data`` section is :class:`rayprune.data.spec.DataSpec`.
* ``reading``: strict YAML reading (duplicate keys, depth, UTF-8, non-finite numbers).
* ``space``: distributions, space keys, the Optuna define-by-run function.
* ``spec``: :class:`SearchSpec`, :func:`parse_spec`, :func:`load_spec`.
* ``checks``: every method's options and schedule built at the corners of the space.
* ``schema``: the JSON Schema generated from the same dataclasses (a copy ships as package data).
"""

from rayprune.config.fields import split_key
from rayprune.config.reading import read_yaml
from rayprune.config.schema import json_schema, packaged_schema
from rayprune.config.sections import (
    PRECISIONS,
    SCHEDULER_KINDS,
    SEARCH_ALGORITHMS,
    BudgetSection,
    ConstraintsSection,
    DistillOptions,
    FailureSection,
    ObjectiveSection,
    ReferenceSection,
    ResourcesSection,
    SchedulerSection,
    SearchSection,
    TrainingSection,
)
from rayprune.config.space import DefineByRun, Distribution
from rayprune.config.spec import SearchSpec, build_section, load_spec, parse_spec
from rayprune.errors import SpecError

__all__ = [
    "SpecError",
    "Distribution",
    "SearchSpec",
    "load_spec",
    "parse_spec",
    "read_yaml",
    "build_section",
    "define_by_run",
    "DefineByRun",
    "split_key",
    "json_schema",
    "packaged_schema",
    "TrainingSection",
    "BudgetSection",
    "ResourcesSection",
    "SchedulerSection",
    "SearchSection",
    "ReferenceSection",
    "ConstraintsSection",
    "ObjectiveSection",
    "FailureSection",
    "DistillOptions",
    "SCHEDULER_KINDS",
    "SEARCH_ALGORITHMS",
    "PRECISIONS",
]


def define_by_run(spec: SearchSpec) -> DefineByRun:
    """Return the Optuna define-by-run function for ``spec``'s space."""
    return DefineByRun(spec.space)
