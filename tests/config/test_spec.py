"""The search-space YAML: validation errors name file, key and allowed values; the
define-by-run space suggests a method's options only when that method is chosen."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from rayprune.config import Distribution, define_by_run, load_spec, parse_spec
from rayprune.errors import SpecError

REPO = Path(__file__).resolve().parents[2]

BASE = {
    "model": "bundled:minilm-l6",
    "data": {"task": "demo"},
    "training": {"steps": 10},
    "space": {"method": "magnitude", "target_sparsity": 0.5},
}


def spec_with(**changes):
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    for dotted, value in changes.items():
        node = raw
        keys = dotted.split("/")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return raw


@pytest.mark.parametrize("path", sorted((REPO / "search_spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_space_validates(path):
    spec = load_spec(path)
    assert spec.objectives[1] == ("sparsity", "max")
    assert spec.methods()


@pytest.mark.parametrize(
    "change, key, allowed",
    [
        ({"space/method": "magnitud"}, "space.method", "magnitude"),
        ({"space/target_sparsity": 1.2}, "space.target_sparsity", "[0, 1)"),
        ({"space/target_sparsity": -0.1}, "space.target_sparsity", "[0, 1)"),
        ({"space/target_sparsity": {"uniform": [0.9, 0.5]}}, "space.target_sparsity.uniform", "low < high"),
        ({"space/learning_rate": {"loguniform": [0.0, 1e-3]}}, "space.learning_rate.loguniform", "low > 0"),
        ({"space/magnitude.colour": 1}, "space.magnitude.colour", "selection"),
        ({"space/magnitude.selection": "everywhere"}, "space.magnitude.selection", "global"),
        ({"space/schedule.kind": "quartic"}, "space.schedule.kind", "cubic"),
        ({"space/movement.score_learning_rate": 0.1}, "space.movement.score_learning_rate", "not among"),
        ({"space/target_sparsity": {"normal": [0, 1]}}, "space.target_sparsity", "choice"),
        ({"budgett": {}}, "budgett", "budget"),
        ({"training/stepz": 3}, "training.stepz", "steps"),
        ({"scheduler/kind": "hyperband"}, "scheduler.kind", "asha"),
        ({"search/algorithm": "cmaes"}, "search.algorithm", "nsga2"),
        ({"search/algorithm": "tpe", "search/population_size": 8}, "search.population_size", "nsga2 only"),
        ({"search/population_size": 1}, "search.population_size", "[2, 1000000]"),
        ({"search/skip_duplicates": "yes"}, "search.skip_duplicates", "true or false"),
        ({"training/steps": "many"}, "training.steps", "int"),
    ],
)
def test_bad_input_names_file_key_and_allowed_values(change, key, allowed):
    with pytest.raises(SpecError) as err:
        parse_spec(spec_with(**change), path="my_space.yaml")
    message = str(err.value)
    assert message.startswith("my_space.yaml: ")
    assert key in message
    assert allowed in message


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(SpecError, match="file not found"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("space: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)


def test_points_to_evaluate_must_lie_in_the_space():
    raw = spec_with(**{"space/target_sparsity": {"uniform": [0.5, 0.9]}})
    raw["points_to_evaluate"] = [{"target_sparsity": 0.95}]
    with pytest.raises(SpecError, match=r"points_to_evaluate\[0\].target_sparsity"):
        parse_spec(raw, path="p.yaml")


def test_define_by_run_scopes_options_to_the_chosen_method():
    raw = spec_with(**{
        "space/method": {"choice": ["magnitude", "movement"]},
        "space/magnitude.selection": {"choice": ["global", "layer"]},
        "space/movement.score_learning_rate": {"loguniform": [1e-3, 1e-1]},
        "space/schedule.end": 0.6,
    })
    spec = parse_spec(raw, path="s.yaml")
    fn = define_by_run(spec)
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        constants = fn(trial)
        method = trial.params["method"]
        seen.add(method)
        other = "movement" if method == "magnitude" else "magnitude"
        assert not any(k.startswith(other + ".") for k in trial.params)
        assert any(k.startswith(method + ".") for k in trial.params)
        assert constants == {"target_sparsity": 0.5, "schedule.end": 0.6}
        study.tell(trial, [0.5, 0.5])
    assert seen == {"magnitude", "movement"}


def test_distribution_contains_and_fixed_values():
    spec = parse_spec(spec_with(**{"space/learning_rate": {"loguniform": [1e-5, 1e-3]}}), path="s.yaml")
    dist = spec.space["learning_rate"]
    assert isinstance(dist, Distribution) and dist.contains(1e-4) and not dist.contains(1e-2)
    assert spec.constants() == {"method": "magnitude", "target_sparsity": 0.5}


def test_shipped_json_schema_is_current_and_accepts_every_space():
    import json

    import jsonschema

    from rayprune.config import json_schema

    schema = json_schema()
    assert json.loads((REPO / "search_spaces" / "schema.json").read_text()) == schema, (
        "search_spaces/schema.json is stale: run `rayprune schema > search_spaces/schema.json`")
    for path in sorted((REPO / "search_spaces").glob("*.yaml")):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(spec_with(**{"space/magnitude.colour": 1}), schema)
