"""Property test of the space-file loader: every input either loads into a spec whose trials all
build (method options + schedule, as a trial builds them), or raises one SpecError naming the file.

Inputs are mutations of the shipped space files (values replaced by random types, NaN/inf, huge
numbers, unicode, distributions over random bounds; keys added, removed, duplicated; random
nesting), generated spaces that search random method options around their defaults (where
cross-field mistakes live), shipped files with explicit YAML tags (``!!bool x``), random YAML text
and random bytes.  CI runs a fixed, bounded number of examples
(derandomized: the same inputs every run); a longer search is one variable away::

    RAYPRUNE_FUZZ_EXAMPLES=20000 pytest tests/config/test_fuzz.py
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import random
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rayprune.config import DistillOptions, load_spec
from rayprune.errors import SpecError

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("RAYPRUNE_FUZZ_EXAMPLES", "1000"))
BASES = [yaml.safe_load((REPO / "search_spaces" / name).read_text())
         for name in ("quickstart.yaml", "all_methods.yaml", "grain.yaml", "pins.yaml", "mgpp.yaml")]
KNOWN_KEYS = sorted({
    "name", "model", "data", "objective", "training", "budget", "resources", "scheduler", "search", "space",
    "points_to_evaluate", "reference", "teacher", "storage", "failure", "task", "max_seq_length", "max_train_samples",
    "metric", "min_metric", "min_retained", "constraints", "max_parameters", "max_latency_ms", "steps", "epochs",
    "batch_size", "eval_interval", "learning_rate", "warmup_ratio", "seed", "max_grad_norm", "threads_per_trial",
    "precision", "compile", "num_samples", "max_concurrent", "cpu", "gpu", "kind", "grace_period",
    "reduction_factor", "algorithm", "max_retries", "method", "target_sparsity", "schedule.start", "schedule.end",
    "schedule.kind", "schedule.interval", "schedule.initial_sparsity", "distill.alpha", "distill.temperature",
    "mgpp.sigma0", "mgpp.sigma1", "mgpp.lambda0", "pins.beta2", "platon.beta1", "magnitude.selection",
    "movement.score_learning_rate", "grain.temperature", "grain.embedding_rank", "rpp.lam", "rpp.stage",
    "magnitude.mask_policy", "choice", "uniform", "loguniform", "int",
})

numbers = st.one_of(
    st.integers(), st.floats(), st.sampled_from([0, 1, -1, 0.5, 0.999, 1e-9, 2**63, -(2**63), 10**400, 1e308]),
    st.floats(min_value=0, max_value=1),
)
scalars = st.one_of(
    st.none(), st.booleans(), numbers, st.text(max_size=12),
    st.sampled_from(["none", "", "~", "magnitude", "mgpp", "pins", "grain", "global", "layer", "cubic", "auto",
                     "bf16", "asha", "tpe", "demo", "sst2", "accuracy", "s3://b/p", "../up", "a/b", "é✓"]),
)
keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=8), st.none(), st.integers(-2, 2), st.booleans())
distributions = st.one_of(
    st.builds(lambda xs: {"choice": xs}, st.lists(scalars, max_size=4)),
    st.builds(lambda kind, a, b: {kind: [a, b]}, st.sampled_from(["uniform", "loguniform", "int"]), numbers, numbers),
)
values = st.recursive(st.one_of(scalars, distributions),
                      lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)),
                      max_leaves=8)


def _slots(node, out, depth=0):
    """(container, key) of every place in a document."""
    if depth > 6:
        return out
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in list(items):
        out.append((node, k))
        _slots(v, out, depth + 1)
    return out


def _near(number):
    """Values a user might mistype a number into: halved, doubled, off by one, negated, 0, a
    thousand times larger, the other numeric type."""
    out = [number * 2, number + 1, number - 1, -number, 0, number * 1000]
    if isinstance(number, int):
        out += [number // 2] + ([float(number)] if abs(number) < 2**1000 else [])
    else:
        out += [number * 0.5] + ([int(number)] if math.isfinite(number) else [])
    return out


@st.composite
def mutated_documents(draw) -> bytes:
    doc = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3, 4]))):
        slots = _slots(doc, [])
        op = draw(st.sampled_from(["perturb", "perturb", "perturb", "replace", "delete", "add", "nest"]))
        container, key = draw(st.sampled_from(slots))
        current = container[key]
        if op == "perturb" and isinstance(current, (int, float)) and not isinstance(current, bool):
            container[key] = draw(st.sampled_from(_near(current)))
        elif op == "perturb" and isinstance(current, str):
            container[key] = draw(st.sampled_from(["none", "", "magnitude", "mgpp", "pins", "movement", "global",
                                                   "linear", "fp16", "mo_asha", "nsga2", "sst2", current + "x"]))
        elif op in ("perturb", "replace"):
            container[key] = draw(values)
        elif op == "delete":
            if isinstance(container, dict):
                del container[key]
            else:
                container.pop(key)
        elif op == "add":
            target = container[key] if isinstance(container[key], dict) else doc
            target[draw(keys)] = draw(values)
        else:
            value = draw(scalars)
            for _ in range(draw(st.integers(1, 80))):
                value = [value] if draw(st.booleans()) else {"k": value}
            container[key] = value
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=draw(st.booleans()))
    tail = draw(st.sampled_from(["", "", "name: again\n", "space: {}\n", "training:\n  steps: 3\n"]))
    data = (text + tail).encode()
    if draw(st.integers(0, 9)) == 0:  # a byte that is not UTF-8
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\x80", b"\xed\xa0\x80"])) + data[at:]
    return data


def _option_fields() -> dict[str, list]:
    from rayprune.methods import available_methods, get_method

    return {m: [f for f in dataclasses.fields(get_method(m).Options)] for m in available_methods()}


OPTION_FIELDS = _option_fields()
SCHEDULE_KEYS = ["schedule.kind", "schedule.start", "schedule.end", "schedule.interval", "schedule.initial_sparsity"]


def _around(default):
    """A constant or a distribution near an option's default: where cross-field mistakes live."""
    if isinstance(default, bool) or default is None:
        return st.sampled_from([default, not default if isinstance(default, bool) else 1, {"choice": [default, 0]}])
    if isinstance(default, (int, float)):
        near = st.sampled_from(_near(default) + [default])
        return st.one_of(near, st.builds(lambda a, b: {"choice": [a, b]}, near, near),
                         st.builds(lambda a, b, k: {k: [min(a, b), max(a, b)]}, near, near,
                                   st.sampled_from(["uniform", "loguniform", "int"])))
    return st.one_of(st.just(default), st.builds(lambda x: {"choice": [default, x]}, scalars))


@st.composite
def generated_spaces(draw) -> bytes:
    """A valid-looking document whose space searches random options of random methods around
    their defaults, with schedule fields and points."""
    methods = draw(st.lists(st.sampled_from(sorted(OPTION_FIELDS)), min_size=1, max_size=3, unique=True))
    space = {"method": methods[0] if len(methods) == 1 else {"choice": methods},
             "target_sparsity": draw(st.sampled_from([0.5, 0.9, {"uniform": [0.5, 0.95]}, {"choice": [0.0, 0.99]}]))}
    for method in methods:
        for f in draw(st.lists(st.sampled_from(OPTION_FIELDS[method]), max_size=4, unique_by=lambda f: f.name)):
            if f.default is not dataclasses.MISSING:
                space[f"{method}.{f.name}"] = draw(_around(f.default))
    for key in draw(st.lists(st.sampled_from(SCHEDULE_KEYS), max_size=3, unique=True)):
        default = {"schedule.kind": "linear", "schedule.interval": 10}.get(key, 0.3)
        space[key] = draw(_around(default))
    if draw(st.booleans()):
        space["distill.alpha"] = draw(_around(0.5))
    doc = {"data": {"task": "demo"}, "training": {"steps": 10}, "space": space}
    if draw(st.booleans()):
        doc["reference"] = "none"
    if draw(st.booleans()):
        keys = draw(st.lists(st.sampled_from(sorted(space)), min_size=1, max_size=3, unique=True))
        doc["points_to_evaluate"] = [{k: (space[k] if not isinstance(space[k], dict) else
                                          next(iter(space[k].values()))[0]) for k in keys}]
    return yaml.safe_dump(doc, sort_keys=False).encode()


#: Explicit tags: every one SafeLoader builds, a local tag, unsafe ones, a verbatim one.
TAGS = sorted(t.replace("tag:yaml.org,2002:", "!!") for t in yaml.SafeLoader.yaml_constructors if t) + [
    "!local", "!!python/object:os.system", "!!python/name:os.system", "!!python/tuple",
    "!<tag:yaml.org,2002:bool>", "!<tag:yaml.org,2002:int>"]


@st.composite
def tagged_documents(draw) -> bytes:
    """A shipped space file with explicit tags put before some of its values (``a: !!bool x``):
    on the value there, on a random scalar instead of it, or on an empty value."""
    lines = yaml.safe_dump(draw(st.sampled_from(BASES)), sort_keys=False).splitlines()
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(lines) - 1))
        line = lines[at]
        head, sep, value = line.partition(": ") if ": " in line else line.rpartition("- ")
        if not sep:
            continue
        value = draw(st.one_of(st.just(value), st.just(""), st.sampled_from(
            ["x", "1", "yes", "+", "2024-13-45", "2024-02-30", "[1, 2]", "{a: 1}", "1e-4", ".nan"])))
        lines[at] = f"{head}{sep}{draw(st.sampled_from(TAGS))} {value}"
    return ("\n".join(lines) + "\n").encode()


documents = st.one_of(  # one_of draws each branch about equally often: mutations 4 in 9
    mutated_documents(), mutated_documents(), mutated_documents(), mutated_documents(), generated_spaces(),
    tagged_documents(),
    st.text(max_size=200).map(str.encode),
    st.binary(max_size=200),
    st.builds(lambda n: ("space: " + "[" * n + "]" * n + "\n").encode(), st.integers(1, 600)),
)


class _SampledTrial:
    """Stands in for an Optuna trial: draws each value at random, or takes a point's value."""

    def __init__(self, rng: random.Random, fixed: dict) -> None:
        self.rng, self.fixed, self.params = rng, fixed, {}

    def _take(self, name, draw):
        value = self.fixed[name] if name in self.fixed else draw()
        self.params[name] = value
        return value

    def suggest_categorical(self, name, choices):
        return self._take(name, lambda: self.rng.choice(choices))

    def suggest_float(self, name, low, high, log=False):
        if log:
            return self._take(name, lambda: math.exp(self.rng.uniform(math.log(low), math.log(high))))
        return self._take(name, lambda: self.rng.uniform(low, high))

    def suggest_int(self, name, low, high):
        return self._take(name, lambda: self.rng.randint(low, high))


def _trials_build(spec) -> None:
    """Sample trial configs as the searcher would (and one per point) and build each the way a
    trial does; any exception fails the property."""
    from rayprune.config import define_by_run
    from rayprune.training import TrialConfig, TrialSettings, build_method

    settings = TrialSettings.from_section(spec.training, model=spec.model, metric="accuracy",
                                          steps=spec.training.steps or 100, threads=1)
    rng = random.Random(0)
    space = define_by_run(spec)
    for fixed in [{}] * 6 + [dict(p) for p in spec.points_to_evaluate]:
        trial = _SampledTrial(rng, fixed)
        constants = space(trial)
        config = TrialConfig.from_flat({**trial.params, **constants}, settings)
        _, schedule = build_method(config)
        if schedule is not None and schedule.kind in ("cubic", "linear"):  # a ramp never runs downwards
            assert schedule.initial_sparsity <= schedule.final_sparsity, schedule
        DistillOptions(**config.distill)
    json.dumps(spec.to_dict(), default=str)


def check_input(data: bytes) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "space.yaml"
        path.write_bytes(data)
        try:
            spec = load_spec(path)
        except SpecError as err:
            message = str(err)
            assert message.startswith(f"{path}: "), message
            assert "\n" not in message and len(message) < 4000, message
            return "refused"
    _trials_build(spec)
    return "loaded"


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(documents)
def test_every_input_loads_into_buildable_trials_or_is_one_spec_error(data):
    check_input(data)


def test_the_unmutated_bases_load_and_their_trials_build():
    for base in BASES:
        assert check_input(yaml.safe_dump(base).encode()) == "loaded"
