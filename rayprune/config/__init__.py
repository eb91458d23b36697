"""The search spec: a space file parsed, validated and typed before any trial starts."""

from rayprune.config.spec import (
    SCHEDULER_KINDS,
    SEARCH_ALGORITHMS,
    DefineByRun,
    Distribution,
    SearchSpec,
    define_by_run,
    json_schema,
    load_spec,
    parse_spec,
)
from rayprune.errors import SpecError

__all__ = [
    "SpecError", "Distribution", "SearchSpec", "load_spec", "parse_spec", "define_by_run", "DefineByRun",
    "json_schema", "SCHEDULER_KINDS", "SEARCH_ALGORITHMS",
]
