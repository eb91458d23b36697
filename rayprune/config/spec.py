"""Search-space YAML -> validated :class:`SearchSpec` -> an Optuna define-by-run space.

The format is documented in the README ("The search-space file").  Validation happens before any
trial starts; every problem raises :class:`SpecError` naming the file, the key and what is allowed,
which the CLI prints without a traceback.

Keys in ``space`` are flat and method-scoped: ``method``, ``target_sparsity``, ``learning_rate``,
training knobs, ``schedule.<field>`` and ``<method>.<option>``.  A method's options exist only when
that method is chosen (Optuna define-by-run), so ``all_methods.yaml`` is one conditional space.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from rayprune.errors import SpecError
from rayprune.methods import available_methods, get_method
from rayprune.methods.schedules import SCHEDULE_KINDS, SparsitySchedule

__all__ = [
    "SpecError",
    "Distribution",
    "SearchSpec",
    "load_spec",
    "parse_spec",
    "define_by_run",
    "SCHEDULER_KINDS",
    "SEARCH_ALGORITHMS",
]

SCHEDULER_KINDS = ("asha", "mo_asha", "fifo")
SEARCH_ALGORITHMS = ("tpe", "nsga2", "random")
DISTRIBUTION_KINDS = ("choice", "uniform", "loguniform", "int")

# Trial-level knobs that may be searched (name -> (python type, validator description)).
TRAINING_KEYS: dict[str, type] = {
    "target_sparsity": float,
    "learning_rate": float,
    "weight_decay": float,
    "warmup_ratio": float,
    "batch_size": int,
    "seed": int,
}
SCHEDULE_FIELDS = ("kind", "start", "end", "interval", "initial_sparsity")


@dataclass(frozen=True)
class Distribution:
    """One searched value: ``kind`` in choice/uniform/loguniform/int, with ``values`` or bounds."""

    kind: str
    args: tuple

    def suggest(self, trial, name: str):
        if self.kind == "choice":
            return trial.suggest_categorical(name, list(self.args))
        if self.kind == "uniform":
            return trial.suggest_float(name, *self.args)
        if self.kind == "loguniform":
            return trial.suggest_float(name, *self.args, log=True)
        return trial.suggest_int(name, *self.args)

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.args
        lo, hi = self.args
        return lo <= value <= hi

    def describe(self) -> str:
        return f"{self.kind}{list(self.args)}"


@dataclass
class SearchSpec:
    """Everything a search needs, validated.  Built by :func:`load_spec`."""

    path: str
    name: str
    model: str
    data: dict
    metric: str
    training: dict
    num_samples: int
    max_concurrent: int
    cpu: float
    gpu: float
    scheduler: dict
    algorithm: str
    seed: int
    space: dict[str, Any]  # name -> Distribution | constant
    points_to_evaluate: list[dict] = field(default_factory=list)
    teacher: dict = field(default_factory=dict)
    raw_hash: str = ""

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
        d = dataclasses.asdict(self)
        d["space"] = {
            k: ({v.kind: list(v.args)} if isinstance(v, Distribution) else v)
            for k, v in self.space.items()
        }
        return d


# ---------------------------------------------------------------------------------- parsing
_TOP_KEYS = {
    "name": "a name for the search (MLflow experiment)",
    "model": "a Hugging Face id, a local path or bundled:minilm-l6",
    "data": "the task / dataset",
    "objective": "the task metric to maximise",
    "training": "steps, batch size, evaluation interval",
    "budget": "num_samples, max_concurrent",
    "resources": "cpu, gpu per trial",
    "scheduler": "asha / mo_asha / fifo",
    "search": "algorithm and seed",
    "space": "the searched parameters",
    "points_to_evaluate": "configurations tried first (papers' defaults)",
    "teacher": "dense teacher for distilling methods",
}
_DATA_KEYS = {
    "task", "dataset", "dataset_config", "train_files", "eval_files", "text_fields",
    "label_field", "num_labels", "metrics", "train_split", "eval_split", "max_train_samples",
    "max_eval_samples", "selection_fraction", "max_seq_length", "seed",
}
_TRAINING_DEFAULTS = {
    "steps": None, "epochs": None, "batch_size": 32, "eval_interval": 50, "eval_batch_size": 128,
    "learning_rate": 5e-5, "weight_decay": 0.0, "warmup_ratio": 0.1, "max_grad_norm": 1.0,
    "seed": 0, "checkpoint_keep": 2, "threads_per_trial": None,
}
_SCHEDULER_DEFAULTS = {"kind": "asha", "grace_period": 2, "reduction_factor": 2}
_TEACHER_DEFAULTS = {"model": None, "steps": None, "learning_rate": 5e-5}


class _Ctx:
    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, key: str, message: str) -> SpecError:
        return SpecError(f"{self.path}: {key}: {message}")


def _mapping(ctx: _Ctx, key: str, value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ctx.fail(key, f"expected a mapping, got {type(value).__name__} {value!r}")
    return dict(value)


def _unknown(ctx: _Ctx, section: str, given: Mapping, allowed) -> None:
    extra = sorted(set(given) - set(allowed))
    if extra:
        where = f"{section}.{extra[0]}" if section else extra[0]
        raise ctx.fail(where, f"unknown key; allowed: {sorted(allowed)}")


def _number(ctx: _Ctx, key: str, value: Any, kind: type, *, lo=None, hi=None, lo_open=False,
            hi_open=False) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ctx.fail(key, f"expected {kind.__name__}, got {type(value).__name__} {value!r}")
    if kind is int and not float(value).is_integer():
        raise ctx.fail(key, f"expected an integer, got {value!r}")
    value = kind(value)
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise ctx.fail(key, f"must be {'>' if lo_open else '>='} {lo}, got {value}")
    if hi is not None and (value > hi or (hi_open and value == hi)):
        raise ctx.fail(key, f"must be {'<' if hi_open else '<='} {hi}, got {value}")
    return value


def _parse_distribution(ctx: _Ctx, key: str, value: Any) -> Any:
    """``{choice: [...]}``, ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``, ``{int: [lo, hi]}``
    or a constant."""
    if not isinstance(value, Mapping):
        return value
    if len(value) != 1 or next(iter(value)) not in DISTRIBUTION_KINDS:
        raise ctx.fail(
            f"space.{key}",
            f"a distribution is one of {{choice: [...]}}, {{uniform: [lo, hi]}}, "
            f"{{loguniform: [lo, hi]}}, {{int: [lo, hi]}}; got {dict(value)!r}",
        )
    kind, args = next(iter(value.items()))
    if not isinstance(args, (list, tuple)) or not args:
        raise ctx.fail(f"space.{key}.{kind}", f"expected a non-empty list, got {args!r}")
    if kind == "choice":
        return Distribution("choice", tuple(args))
    if len(args) != 2:
        raise ctx.fail(f"space.{key}.{kind}", f"expected [low, high], got {args!r}")
    num = int if kind == "int" else float
    lo = _number(ctx, f"space.{key}.{kind}[0]", args[0], num)
    hi = _number(ctx, f"space.{key}.{kind}[1]", args[1], num)
    if not lo < hi:
        raise ctx.fail(f"space.{key}.{kind}", f"empty range: need low < high, got [{lo}, {hi}]")
    if kind == "loguniform" and lo <= 0:
        raise ctx.fail(f"space.{key}.{kind}", f"loguniform needs low > 0, got {lo}")
    return Distribution(kind, (lo, hi))


def _values(v: Any) -> list:
    """The values a space entry can take (bounds for ranges)."""
    if isinstance(v, Distribution):
        return list(v.args)
    return [v]


def _check_value(ctx: _Ctx, key: str, v: Any, check) -> None:
    for value in _values(v):
        try:
            check(value)
        except (ValueError, TypeError) as err:
            raise ctx.fail(f"space.{key}", str(err)) from None


def _check_space(ctx: _Ctx, space: dict[str, Any]) -> None:
    methods_all = available_methods()
    if "method" not in space:
        raise ctx.fail("space.method", f"required; one of {methods_all} or {{choice: [...]}}")
    chosen = _values(space["method"])
    for m in chosen:
        if m not in methods_all:
            raise ctx.fail("space.method", f"unknown method {m!r}; allowed: {methods_all}")
    if "target_sparsity" not in space:
        raise ctx.fail("space.target_sparsity", "required: the sparsity to reach, in [0, 1)")
    for key, value in space.items():
        if key == "method":
            continue
        if key in TRAINING_KEYS:
            kind = TRAINING_KEYS[key]

            def check(x, key=key, kind=kind):
                if isinstance(x, bool) or not isinstance(x, (int, float)):
                    raise TypeError(f"expected {kind.__name__}, got {x!r}")
                if key == "target_sparsity" and not 0.0 <= x < 1.0:
                    raise ValueError(f"sparsity must be in [0, 1), got {x}")
                if key in ("learning_rate", "batch_size") and x <= 0:
                    raise ValueError(f"must be > 0, got {x}")
                if key in ("weight_decay", "warmup_ratio") and not 0 <= x <= 1:
                    raise ValueError(f"must be in [0, 1], got {x}")

            _check_value(ctx, key, value, check)
            continue
        scope, _, option = key.partition(".")
        if not option:
            raise ctx.fail(
                f"space.{key}",
                f"unknown key; allowed: method, {sorted(TRAINING_KEYS)}, schedule.<field> "
                f"({list(SCHEDULE_FIELDS)}) or <method>.<option> with <method> in {methods_all}",
            )
        if scope == "schedule":
            if option not in SCHEDULE_FIELDS:
                raise ctx.fail(f"space.{key}", f"unknown schedule field; allowed: {list(SCHEDULE_FIELDS)}")

            def check(x, option=option):
                if option == "kind" and x not in SCHEDULE_KINDS:
                    raise ValueError(f"must be one of {list(SCHEDULE_KINDS)}, got {x!r}")
                if option in ("start", "end") and not 0 <= x <= 1:
                    raise ValueError(f"must be a fraction of training in [0, 1], got {x}")
                if option in ("interval", "initial_sparsity"):
                    SparsitySchedule(final_sparsity=0.5, **{option: x})  # its own validation

            _check_value(ctx, key, value, check)
            continue
        if scope not in methods_all:
            raise ctx.fail(f"space.{key}", f"unknown method scope {scope!r}; allowed: {methods_all}")
        if scope not in chosen:
            raise ctx.fail(
                f"space.{key}", f"method {scope!r} is not among the searched methods {chosen}"
            )
        cls = get_method(scope)
        fields = {f.name for f in cls.option_fields()}
        if option not in fields:
            raise ctx.fail(f"space.{key}", f"unknown option of {scope}; allowed: {sorted(fields)}")

        def check(x, cls=cls, option=option):
            cls.Options(**{option: x})

        _check_value(ctx, key, value, check)


def parse_spec(raw: Any, *, path: str = "<spec>") -> SearchSpec:
    """Validate a parsed YAML document and return a :class:`SearchSpec`."""
    ctx = _Ctx(path)
    raw = _mapping(ctx, "<top level>", raw)
    _unknown(ctx, "", raw, _TOP_KEYS)
    model = raw.get("model", "bundled:minilm-l6")
    if not isinstance(model, str) or not model:
        raise ctx.fail("model", f"expected a model id or path, got {model!r}")

    data = _mapping(ctx, "data", raw.get("data"))
    _unknown(ctx, "data", data, _DATA_KEYS)
    if not data.get("task") and not data.get("dataset") and not data.get("train_files"):
        raise ctx.fail("data", "name one of data.task (a GLUE preset or 'demo'), data.dataset or data.train_files")
    data.setdefault("max_seq_length", 128)
    _number(ctx, "data.max_seq_length", data["max_seq_length"], int, lo=8)

    objective = _mapping(ctx, "objective", raw.get("objective"))
    _unknown(ctx, "objective", objective, {"metric"})
    metric = objective.get("metric")

    training = {**_TRAINING_DEFAULTS, **_mapping(ctx, "training", raw.get("training"))}
    _unknown(ctx, "training", training, _TRAINING_DEFAULTS)
    if training["steps"] is None and training["epochs"] is None:
        raise ctx.fail("training", "set training.steps or training.epochs")
    if training["steps"] is not None:
        _number(ctx, "training.steps", training["steps"], int, lo=1)
    if training["epochs"] is not None:
        _number(ctx, "training.epochs", training["epochs"], float, lo=0, lo_open=True)
    for key in ("batch_size", "eval_interval", "eval_batch_size", "checkpoint_keep"):
        training[key] = _number(ctx, f"training.{key}", training[key], int, lo=1)
    training["learning_rate"] = _number(ctx, "training.learning_rate", training["learning_rate"], float, lo=0, lo_open=True)
    training["warmup_ratio"] = _number(ctx, "training.warmup_ratio", training["warmup_ratio"], float, lo=0, hi=1)

    budget = _mapping(ctx, "budget", raw.get("budget"))
    _unknown(ctx, "budget", budget, {"num_samples", "max_concurrent"})
    num_samples = _number(ctx, "budget.num_samples", budget.get("num_samples", 8), int, lo=1)
    max_concurrent = _number(ctx, "budget.max_concurrent", budget.get("max_concurrent", 2), int, lo=1)

    resources = _mapping(ctx, "resources", raw.get("resources"))
    _unknown(ctx, "resources", resources, {"cpu", "gpu"})
    cpu = _number(ctx, "resources.cpu", resources.get("cpu", 1), float, lo=0, lo_open=True)
    gpu = _number(ctx, "resources.gpu", resources.get("gpu", 0), float, lo=0)

    scheduler = {**_SCHEDULER_DEFAULTS, **_mapping(ctx, "scheduler", raw.get("scheduler"))}
    _unknown(ctx, "scheduler", scheduler, _SCHEDULER_DEFAULTS)
    if scheduler["kind"] not in SCHEDULER_KINDS:
        raise ctx.fail("scheduler.kind", f"must be one of {list(SCHEDULER_KINDS)}, got {scheduler['kind']!r}")
    _number(ctx, "scheduler.grace_period", scheduler["grace_period"], int, lo=1)
    _number(ctx, "scheduler.reduction_factor", scheduler["reduction_factor"], float, lo=1, lo_open=True)

    search = _mapping(ctx, "search", raw.get("search"))
    _unknown(ctx, "search", search, {"algorithm", "seed"})
    algorithm = search.get("algorithm", "tpe")
    if algorithm not in SEARCH_ALGORITHMS:
        raise ctx.fail("search.algorithm", f"must be one of {list(SEARCH_ALGORITHMS)}, got {algorithm!r}")
    seed = _number(ctx, "search.seed", search.get("seed", 0), int)

    teacher = {**_TEACHER_DEFAULTS, **_mapping(ctx, "teacher", raw.get("teacher"))}
    _unknown(ctx, "teacher", teacher, _TEACHER_DEFAULTS)

    space_raw = _mapping(ctx, "space", raw.get("space"))
    if not space_raw:
        raise ctx.fail("space", "required: at least `method` and `target_sparsity`")
    space = {str(k): _parse_distribution(ctx, str(k), v) for k, v in space_raw.items()}
    _check_space(ctx, space)

    points = raw.get("points_to_evaluate") or []
    if not isinstance(points, list):
        raise ctx.fail("points_to_evaluate", "expected a list of mappings")
    for i, point in enumerate(points):
        point = _mapping(ctx, f"points_to_evaluate[{i}]", point)
        for k, v in point.items():
            if k not in space:
                raise ctx.fail(f"points_to_evaluate[{i}].{k}", f"not a key of space; allowed: {sorted(space)}")
            dist = space[k]
            if isinstance(dist, Distribution) and not dist.contains(v):
                raise ctx.fail(f"points_to_evaluate[{i}].{k}", f"{v!r} is outside {dist.describe()}")
        method = point.get("method", space["method"] if not isinstance(space["method"], Distribution) else None)
        for k in point:
            scope = k.partition(".")[0]
            if scope in available_methods() and scope != method:
                raise ctx.fail(f"points_to_evaluate[{i}].{k}", f"option of {scope!r} but the point's method is {method!r}")

    name = raw.get("name") or Path(path).stem
    digest = hashlib.sha256(yaml.safe_dump(raw, sort_keys=True).encode()).hexdigest()[:16]
    return SearchSpec(
        path=path, name=str(name), model=model, data=data, metric=metric or "",
        training=training, num_samples=num_samples, max_concurrent=max_concurrent, cpu=cpu,
        gpu=gpu, scheduler=scheduler, algorithm=algorithm, seed=seed, space=space,
        points_to_evaluate=points, teacher=teacher, raw_hash=digest,
    )


def load_spec(path: str | Path) -> SearchSpec:
    """Read and validate a search-space YAML file."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {err}") from None
    return parse_spec(raw, path=str(path))


class DefineByRun:
    """The Optuna define-by-run space of a :class:`SearchSpec` (a picklable callable: Ray
    checkpoints the searcher with the experiment).

    The method is suggested first; ``<method>.<option>`` entries are suggested only for the
    chosen method, so each method's hyperparameters exist only when it is chosen.  Constants are
    returned and Ray adds them to the trial config.
    """

    def __init__(self, space: Mapping[str, Any]) -> None:
        self.space = dict(space)

    def __call__(self, trial) -> dict:
        method_dist = self.space["method"]
        if isinstance(method_dist, Distribution):
            method = method_dist.suggest(trial, "method")
            constants = {}
        else:
            method, constants = method_dist, {"method": method_dist}
        methods = set(available_methods())
        for key, value in self.space.items():
            if key == "method":
                continue
            scope = key.partition(".")[0]
            if scope in methods and scope != method:
                continue
            if isinstance(value, Distribution):
                value.suggest(trial, key)
            else:
                constants[key] = value
        return constants


def define_by_run(spec: SearchSpec) -> DefineByRun:
    """Return the Optuna define-by-run function for ``spec``'s space."""
    return DefineByRun(spec.space)


def finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def json_schema() -> dict:
    """A JSON Schema (draft 2020-12) of the search-space file, built from the same tables the
    validator uses and from the method registry, for editors and CI linters
    (``rayprune schema > schema.json``).  :func:`parse_spec` remains the authority: it also
    checks ranges against each method's option validation."""
    import typing

    def dist(value_schema: dict) -> dict:
        bounds = {"type": "array", "prefixItems": [value_schema, value_schema], "minItems": 2, "maxItems": 2}
        return {"oneOf": [
            value_schema,
            {"type": "object", "additionalProperties": False, "minProperties": 1, "maxProperties": 1,
             "properties": {"choice": {"type": "array", "minItems": 1, "items": value_schema},
                            "uniform": bounds, "loguniform": bounds, "int": bounds}},
        ]}

    def of_type(tp) -> dict:
        origin = typing.get_origin(tp)
        if origin is typing.Literal:
            return {"enum": list(typing.get_args(tp))}
        if tp in (int, "int"):
            return {"type": "integer"}
        if tp in (float, "float"):
            return {"type": "number"}
        if tp in (bool, "bool"):
            return {"type": "boolean"}
        if tp in (str, "str"):
            return {"type": "string"}
        return {}

    space_props: dict[str, Any] = {
        "method": dist({"enum": available_methods()}),
        "target_sparsity": dist({"type": "number", "minimum": 0, "exclusiveMaximum": 1}),
        "learning_rate": dist({"type": "number", "exclusiveMinimum": 0}),
        "weight_decay": dist({"type": "number", "minimum": 0, "maximum": 1}),
        "warmup_ratio": dist({"type": "number", "minimum": 0, "maximum": 1}),
        "batch_size": dist({"type": "integer", "minimum": 1}),
        "seed": dist({"type": "integer"}),
        "schedule.kind": dist({"enum": list(SCHEDULE_KINDS)}),
        "schedule.start": dist({"type": "number", "minimum": 0, "maximum": 1}),
        "schedule.end": dist({"type": "number", "minimum": 0, "maximum": 1}),
        "schedule.interval": dist({"type": "integer", "minimum": 1}),
        "schedule.initial_sparsity": dist({"type": "number", "minimum": 0, "exclusiveMaximum": 1}),
    }
    for name in available_methods():
        cls = get_method(name)
        hints = typing.get_type_hints(cls.Options)
        for f in cls.option_fields():
            entry = dist(of_type(hints.get(f.name)))
            help_text = (f.metadata or {}).get("help")
            if help_text:
                entry["description"] = help_text
            space_props[f"{name}.{f.name}"] = entry

    def section(keys, extra=None) -> dict:
        return {"type": "object", "additionalProperties": False,
                "properties": {k: (extra or {}).get(k, {}) for k in keys}}

    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "rayprune search space",
        "type": "object",
        "additionalProperties": False,
        "required": ["space"],
        "properties": {
            "name": {"type": "string"},
            "model": {"type": "string", "description": _TOP_KEYS["model"]},
            "data": section(sorted(_DATA_KEYS)),
            "objective": section(["metric"]),
            "training": section(sorted(_TRAINING_DEFAULTS)),
            "budget": section(["num_samples", "max_concurrent"],
                              {"num_samples": {"type": "integer", "minimum": 1},
                               "max_concurrent": {"type": "integer", "minimum": 1}}),
            "resources": section(["cpu", "gpu"], {"cpu": {"type": "number", "exclusiveMinimum": 0},
                                                  "gpu": {"type": "number", "minimum": 0}}),
            "scheduler": section(sorted(_SCHEDULER_DEFAULTS), {"kind": {"enum": list(SCHEDULER_KINDS)}}),
            "search": section(["algorithm", "seed"], {"algorithm": {"enum": list(SEARCH_ALGORITHMS)}}),
            "teacher": section(sorted(_TEACHER_DEFAULTS)),
            "space": {"type": "object", "additionalProperties": False, "required": ["method", "target_sparsity"],
                      "properties": space_props},
            "points_to_evaluate": {"type": "array", "items": {"type": "object"}},
        },
    }
