"""Search-space YAML -> validated, typed :class:`SearchSpec`.

The format is documented in the README ("The search-space file").  Validation happens before any
trial starts, in two stages: the structure and every value on its own (this module, no torch),
then every method's options and schedule at the corners of the space
(:mod:`rayprune.config.checks`).  Every problem raises :class:`SpecError` naming the file, the
key and what is allowed, which the CLI prints without a traceback.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from rayprune.config.fields import check_value, describe_value, number_hint, shorten, split_key, type_hints
from rayprune.config.reading import check_numbers, read_yaml
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
    TrainingSection,
)
from rayprune.config.space import (
    SCHEDULE_FIELDS,
    Distribution,
    check_entry,
    parse_distribution,
    same_value,
    scalar_field,
)
from rayprune.data.spec import DataSpec
from rayprune.errors import SpecError
from rayprune.methods import available_methods

__all__ = ["SearchSpec", "load_spec", "parse_spec", "build_section", "TOP_KEYS", "MAX_CHOICES", "STORAGE_SCHEMES"]

#: Top-level keys of a space file and what each holds.
TOP_KEYS = {
    "name": "a name for the search: its directory under --output and the MLflow experiment",
    "model": "a Hugging Face id, a local path or bundled:minilm-l6",
    "trust_remote_code": "run the Python code that ships with the model (default false)",
    "data": "the task / dataset (rayprune.data.DataSpec)",
    "objective": "the task metric to maximise, floors and constraints",
    "training": "steps, batch size, evaluation interval, precision",
    "budget": "num_samples, max_concurrent",
    "resources": "cpu, gpu per trial",
    "scheduler": "asha / mo_asha / fifo",
    "search": "the Optuna sampler: algorithm, seed (and population_size for nsga2)",
    "space": "the searched parameters",
    "points_to_evaluate": "configurations tried first (papers' defaults)",
    "reference": "the dense reference (and teacher), or `none`",
    "teacher": "deprecated alias of reference",
    "storage": "where Ray Tune keeps results and checkpoints (a path or s3:// gs:// file:// URI)",
    "failure": "retries of trials whose node died",
}
DEFAULT_MODEL = "bundled:minilm-l6"
#: A choice longer than this is a mistake (and would make the corner checks quadratic).
MAX_CHOICES = 256
_NAME_MAX = 128
#: Longest key path shown in a message: the longest real one
#: (``points_to_evaluate[255].movement.score_learning_rate``) fits; a user's unknown key of
#: thousands of characters is cut.
_KEY_MAX = 80
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
#: URI schemes Ray Tune's storage can write to: those ``pyarrow.fs.FileSystem.from_uri`` knows
#: (it wants them in lower case; ``mock`` and ``local`` left out).  Anything else fails only when
#: Ray first writes a result, after the model and data have loaded.
STORAGE_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs", "file")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Context:
    """Where messages point: the file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, key: str, message: str) -> SpecError:
        """The error for ``key`` (a dotted path that may end in a user's key: shortened like a
        value, see :data:`_KEY_MAX`)."""
        return SpecError(f"{self.path}: {shorten(key, _KEY_MAX)}: {message}")


def _mapping(ctx: _Context, where: str, value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ctx.fail(where, f"expected a mapping, got {type(value).__name__} {describe_value(value)}")
    return dict(value)


def _unknown_key(ctx: _Context, where: str, key: Any, allowed) -> SpecError:
    at = (f"{where}.{key}" if where else key) if isinstance(key, str) and key else (where or "<top level>")
    shown = "" if isinstance(key, str) and key else f" {describe_value(key)}"
    return ctx.fail(at, f"unknown key{shown}; allowed: {sorted(allowed)}")


def build_section(cls: type, value: Any, *, where: str, source: str):
    """A dataclass (a spec section, :class:`~rayprune.data.spec.DataSpec`, ...) from its YAML
    mapping: unknown keys, each value's type and bounds, then the constructor's own cross-field
    checks, each as one :class:`SpecError` naming ``source`` (the file) and the key under ``where``."""
    return _build(_Context(source), cls, where, value)


def _build(ctx: _Context, cls: type, where: str, value: Any):
    given = _mapping(ctx, where, value)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = type_hints(cls)
    kwargs = {}
    for key, item in given.items():
        if not isinstance(key, str) or key not in fields:
            raise _unknown_key(ctx, where, key, fields)
        if dataclasses.is_dataclass(hints[key]):
            kwargs[key] = _build(ctx, hints[key], f"{where}.{key}", item)
            continue
        try:
            kwargs[key] = check_value(item, hints[key], fields[key].metadata)
        except (TypeError, ValueError) as err:
            raise ctx.fail(f"{where}.{key}", str(err)) from None
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, ArithmeticError) as err:
        name, sep, rest = str(err).partition(": ")
        if sep and name in fields:  # "<field>: ..." from a section's own check
            raise ctx.fail(f"{where}.{name}", rest) from None
        raise ctx.fail(where, str(err)) from None


#: Unicode categories refused in a name: control characters (C0 and C1: U+0085 is one), format
#: characters (the bidirectional overrides such as U+202E, which make a name display reversed,
#: and zero-width ones), surrogates, line and paragraph separators.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _plain_name(ctx: _Context, name: Any, given: bool) -> str:
    """``name`` becomes a directory under ``--output`` and the MLflow experiment's name: one plain
    path component that prints as what it is (nothing invisible, no surrounding whitespace)."""
    fix = "set `name:` to a plain directory name" if not given else "use a plain directory name"
    if not isinstance(name, str):
        raise ctx.fail("name", f"expected a string (a directory name), got {type(name).__name__} {describe_value(name)}")
    if not name or len(name) > _NAME_MAX:
        raise ctx.fail("name", f"must be 1 to {_NAME_MAX} characters, got {describe_value(name)}; {fix}")
    if name in (".", "..") or any(c in name for c in "/\\") or any(unicodedata.category(c) in _INVISIBLE for c in name):
        raise ctx.fail("name", f"{describe_value(name)} is not a plain directory name (no '/', '\\\\', "
                               f"control or bidirectional-override characters, '.' or '..'); {fix}")
    if name != name.strip():
        what = "only whitespace" if not name.strip() else "whitespace at its start or end"
        raise ctx.fail("name", f"{describe_value(name)} has {what}; {fix}")
    return name


def _reference(ctx: _Context, raw: Mapping) -> ReferenceSection | None:
    if "reference" in raw and "teacher" in raw:
        raise ctx.fail("teacher", "give `reference:` only (`teacher:` is its deprecated alias)")
    key = "teacher" if "teacher" in raw else "reference"
    value = raw.get(key)
    if isinstance(value, str) and value.strip().lower() == "none":
        return None
    if value is not None and not isinstance(value, Mapping):
        raise ctx.fail(key, f"expected a mapping (model, steps, learning_rate) or `none`, got {describe_value(value)}")
    return _build(ctx, ReferenceSection, key, value)


def _storage(ctx: _Context, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise ctx.fail("storage", f"expected a path or a URI (s3://, gs://, file://), got {describe_value(value)}")
    if "://" in value:
        match = _SCHEME.match(value)
        if not match:
            raise ctx.fail("storage", f"{describe_value(value)} is not a URI: expected scheme://... such as s3://bucket/dir")
        if match.group(1) not in STORAGE_SCHEMES:
            raise ctx.fail("storage", f"{describe_value(value)}: Ray Tune cannot store results under "
                                      f"{shorten(match.group(1), 30)}://; allowed: "
                                      + ", ".join(f"{s}://" for s in STORAGE_SCHEMES) + " or a path")
    return value


def _parse_space(ctx: _Context, raw: Any) -> dict[str, Any]:
    given = _mapping(ctx, "space", raw)
    if not given:
        raise ctx.fail("space", "required: at least `method` and `target_sparsity`")
    methods_all = available_methods()
    allowed = (["method", "target_sparsity", *SEARCHABLE_TRAINING_KEYS] + [f"schedule.{f}" for f in SCHEDULE_FIELDS]
               + [f"distill.{f.name}" for f in dataclasses.fields(DistillOptions)] + ["<method>.<option>"])
    space: dict[str, Any] = {}
    for key, value in given.items():
        if not isinstance(key, str) or not key:
            raise ctx.fail("space", f"unknown key {describe_value(key)}; allowed: {allowed}")
        entry = parse_distribution(f"space.{key}", value, ctx.fail)
        if isinstance(entry, Distribution) and entry.kind == "choice" and len(entry.args) > MAX_CHOICES:
            raise ctx.fail(f"space.{key}.choice", f"{len(entry.args)} choices; at most {MAX_CHOICES}")
        space[key] = entry
    if "method" not in space:
        raise ctx.fail("space.method", f"required; one of {methods_all} or {{choice: [...]}}")
    method = space["method"]
    if isinstance(method, Distribution) and method.kind != "choice":
        raise ctx.fail("space.method", f"a method is chosen with {{choice: [...]}}, not {method.kind}")
    chosen = list(method.args) if isinstance(method, Distribution) else [method]
    for m in chosen:
        if not isinstance(m, str) or m not in methods_all:
            raise ctx.fail("space.method", f"unknown method {describe_value(m)}; allowed: {methods_all}")
    if "target_sparsity" not in space:
        raise ctx.fail("space.target_sparsity", "required: the sparsity to reach, in [0, 1)")
    for key, entry in space.items():
        if key == "method":
            continue
        known = scalar_field(key)
        if known is not None:
            check_entry(f"space.{key}", entry, *known, ctx.fail)
            continue
        scope, _ = split_key(key)
        if scope is None or scope in ("schedule", "distill"):
            raise ctx.fail(f"space.{key}", f"unknown key; allowed: {allowed}")
        if scope not in methods_all:
            raise ctx.fail(f"space.{key}", f"unknown method scope {describe_value(scope)}; allowed: {methods_all}")
        if scope not in chosen:
            raise ctx.fail(f"space.{key}", f"method {scope!r} is not among the searched methods {chosen}")
    return space


def _parse_points(ctx: _Context, raw: Any, space: Mapping[str, Any]) -> list[dict]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ctx.fail("points_to_evaluate", f"expected a list of mappings of space keys, got {describe_value(raw)}")
    methods_all = set(available_methods())
    method_entry = space["method"]
    points = []
    for i, point in enumerate(raw):
        where = f"points_to_evaluate[{i}]"
        if not isinstance(point, Mapping) or not point:
            raise ctx.fail(where, f"expected a mapping of space keys to values, got {describe_value(point)}")
        for key, value in point.items():
            if not isinstance(key, str) or key not in space:
                raise _unknown_key(ctx, where, key, space)
            entry = space[key]
            if isinstance(entry, Distribution):
                if not entry.contains(value):
                    raise ctx.fail(f"{where}.{key}", f"{describe_value(value)} is outside {entry.describe()}"
                                                     f"{number_hint(value) if all(map(_is_number, entry.args)) else ''}")
            elif not same_value(value, entry):
                raise ctx.fail(f"{where}.{key}", f"{describe_value(value)}, but the space fixes it to "
                                                 f"{describe_value(entry)}")
        method = point.get("method", None if isinstance(method_entry, Distribution) else method_entry)
        for key in point:
            scope, _ = split_key(key)
            if scope in methods_all and scope != method:
                raise ctx.fail(f"{where}.{key}", f"option of {scope!r} but the point's method is {method!r}")
        points.append(dict(point))
    return points


@dataclass
class SearchSpec:
    """Everything a search needs, validated and typed.  Built by :func:`load_spec`.

    Attributes:
        path: the space file (messages name it).
        name: the search's directory under ``--output`` and its MLflow experiment.
        model: the pretrained model every trial starts from.
        trust_remote_code: let transformers run Python code shipped with the model (``auto_map``
            classes) in the driver and every trial; False unless the file sets it.
        data / training / budget / resources / scheduler / search / objective / failure: the
            sections, as their dataclasses (defaults filled in).
        reference: the dense reference section, None under ``reference: none``.
        storage: Ray storage (path or URI) from the YAML, None for the search directory.
        space: key -> :class:`~rayprune.config.space.Distribution` or constant.
        points_to_evaluate: configurations tried first.
        raw_hash: digest of the file's content (a resumed search must use the same space).
    """

    path: str
    name: str
    model: str
    data: DataSpec
    training: TrainingSection
    space: dict[str, Any]
    budget: BudgetSection = field(default_factory=BudgetSection)
    resources: ResourcesSection = field(default_factory=ResourcesSection)
    scheduler: SchedulerSection = field(default_factory=SchedulerSection)
    search: SearchSection = field(default_factory=SearchSection)
    objective: ObjectiveSection = field(default_factory=ObjectiveSection)
    reference: ReferenceSection | None = field(default_factory=ReferenceSection)
    failure: FailureSection = field(default_factory=FailureSection)
    storage: str | None = None
    trust_remote_code: bool = False
    points_to_evaluate: list[dict] = field(default_factory=list)
    raw_hash: str = ""

    @property
    def metric(self) -> str:
        """The objective metric ("" until the preflight fills in the task's primary metric)."""
        return self.objective.metric or ""

    @metric.setter
    def metric(self, value: str) -> None:
        self.objective = dataclasses.replace(self.objective, metric=value)

    # Shortcuts used by the driver and the searcher.
    @property
    def num_samples(self) -> int:
        return self.budget.num_samples

    @property
    def max_concurrent(self) -> int:
        return self.budget.max_concurrent

    @property
    def cpu(self) -> float:
        return self.resources.cpu

    @property
    def gpu(self) -> float:
        return self.resources.gpu

    @property
    def algorithm(self) -> str:
        return self.search.algorithm

    @property
    def seed(self) -> int:
        return self.search.seed

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """The two objectives, declared once: task metric (max) and measured sparsity (max)."""
        return [(self.metric, "max"), ("sparsity", "max")]

    def methods(self) -> list[str]:
        m = self.space.get("method")
        if isinstance(m, Distribution):
            return list(m.args)
        return [m]

    def searched(self) -> dict[str, Distribution]:
        return {k: v for k, v in self.space.items() if isinstance(v, Distribution)}

    def constants(self) -> dict[str, Any]:
        return {k: v for k, v in self.space.items() if not isinstance(v, Distribution)}

    def to_dict(self) -> dict:
        """A JSON-able copy (``search.json``): sections as mappings, distributions as
        ``{kind: [args]}``."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key, value in d.items():
            if dataclasses.is_dataclass(value):
                d[key] = dataclasses.asdict(value)
        d["metric"] = self.metric
        d["space"] = {k: ({v.kind: list(v.args)} if isinstance(v, Distribution) else v) for k, v in self.space.items()}
        return d


def parse_spec(raw: Any, *, path: str = "<spec>", check: bool = True) -> SearchSpec:
    """Validate a parsed YAML document and return a :class:`SearchSpec`.

    Args:
        raw: the document (``yaml.safe_load`` of the file, or a dict built in Python).
        path: the file, for messages.
        check: also build every method's options and schedule at the corners of the space
            (:func:`rayprune.config.checks.check_trials`; imports the methods, and so torch).

    Raises:
        SpecError: the first problem, naming the file, the key and what is allowed.
    """
    ctx = _Context(path)
    if raw is None:
        raise ctx.fail("<top level>", "the file is empty; expected a mapping with data, training and space")
    raw = _mapping(ctx, "<top level>", raw)
    check_numbers(path, raw)
    for key in raw:
        if not isinstance(key, str) or key not in TOP_KEYS:
            raise _unknown_key(ctx, "", key, TOP_KEYS)
    model = raw.get("model", DEFAULT_MODEL)
    if not isinstance(model, str) or not model.strip() or "\0" in model:
        raise ctx.fail("model", f"expected a model id or path, got {describe_value(model)}")
    try:  # a boolean only: null, 1 or a string is refused, not read as on or off
        trust_remote_code = check_value(raw.get("trust_remote_code", False), bool)
    except TypeError as err:
        raise ctx.fail("trust_remote_code", str(err)) from None
    name = _plain_name(ctx, raw["name"] if "name" in raw else Path(path).stem, given="name" in raw)
    data = _build(ctx, DataSpec, "data", raw.get("data"))
    if "training" not in raw:
        raise ctx.fail("training", "set training.steps or training.epochs")
    training = _build(ctx, TrainingSection, "training", raw.get("training"))
    sections = {key: _build(ctx, cls, key, raw.get(key)) for key, cls in (
        ("budget", BudgetSection), ("resources", ResourcesSection), ("scheduler", SchedulerSection),
        ("search", SearchSection), ("objective", ObjectiveSection), ("failure", FailureSection))}
    reference = _reference(ctx, raw)
    objective = sections["objective"]
    if reference is None:
        for key, value in (("objective.min_retained", objective.min_retained),
                           ("objective.constraints.min_retained", objective.constraints.min_retained)):
            if value is not None:
                raise ctx.fail(key, "is a fraction of the dense reference's metric; remove `reference: none` "
                                    "or use objective.min_metric")
    storage = _storage(ctx, raw.get("storage"))
    space = _parse_space(ctx, raw.get("space"))
    points = _parse_points(ctx, raw.get("points_to_evaluate"), space)
    spec = SearchSpec(path=path, name=name, model=model, data=data, training=training, space=space,
                      reference=reference, storage=storage, trust_remote_code=trust_remote_code,
                      points_to_evaluate=points, **sections)
    if check:
        from rayprune.config.checks import check_trials

        check_trials(space, points, spec.methods(), has_reference=reference is not None, fail=ctx.fail)
    spec.raw_hash = hashlib.sha256(yaml.safe_dump(raw, sort_keys=True).encode()).hexdigest()[:16]
    return spec


def load_spec(path: str | Path, *, check: bool = True) -> SearchSpec:
    """Read and validate a search-space YAML file (see :func:`parse_spec`)."""
    return parse_spec(read_yaml(path, what="space file"), path=str(path), check=check)
