"""Driver pieces that need no cluster: the searcher's fidelity handling, Pareto tables, teacher cache."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

from rayprune.search.results import write_pareto
from rayprune.search.searcher import create_searcher
from rayprune.config import parse_spec

SPACE = {
    "model": "bundled:minilm-l6",
    "data": {"task": "demo"},
    "training": {"steps": 10},
    "objective": {"metric": "accuracy"},
    "budget": {"num_samples": 3, "max_concurrent": 3},
    "space": {"method": {"choice": ["magnitude", "movement"]}, "target_sparsity": {"uniform": [0.5, 0.9]}},
    "points_to_evaluate": [{"method": "magnitude", "target_sparsity": 0.8}],
}


def test_scheduler_stopped_trials_are_told_pruned_and_full_ones_complete():
    spec = parse_spec(SPACE, path="s.yaml")
    limiter = create_searcher(spec)
    searcher = limiter.searcher
    first = limiter.suggest("t1")
    assert first["method"] == "magnitude" and first["target_sparsity"] == 0.8  # paper default first
    limiter.suggest("t2")
    limiter.suggest("t3")
    limiter.on_trial_complete("t1", {"accuracy": 0.9, "sparsity": 0.8, "budget_fraction": 1.0})
    limiter.on_trial_complete("t2", {"accuracy": 0.6, "sparsity": 0.3, "budget_fraction": 0.5})
    limiter.on_trial_complete("t3", None, error=True)
    states = [t.state for t in searcher._ot_study.trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    # only full-budget trials inform the study's Pareto set
    assert [t.values for t in searcher._ot_study.best_trials] == [[0.9, 0.8]]


def test_pareto_uses_only_full_budget_trials(tmp_path):
    rows = [
        {"trial_id": "a", "method": "magnitude", "target_sparsity": 0.5, "accuracy": 0.90, "sparsity": 0.5,
         "budget_fraction": 1.0, "status": "complete", "config": "{}"},
        {"trial_id": "b", "method": "magnitude", "target_sparsity": 0.9, "accuracy": 0.80, "sparsity": 0.9,
         "budget_fraction": 1.0, "status": "complete", "config": "{}"},
        {"trial_id": "c", "method": "movement", "target_sparsity": 0.7, "accuracy": 0.70, "sparsity": 0.6,
         "budget_fraction": 1.0, "status": "complete", "config": "{}"},
        # stopped early at a low sparsity with a high accuracy: must not enter the front
        {"trial_id": "d", "method": "movement", "target_sparsity": 0.9, "accuracy": 0.95, "sparsity": 0.95,
         "budget_fraction": 0.5, "status": "stopped", "config": "{}"},
    ]
    summary = write_pareto(tmp_path, rows, metric="accuracy")
    assert [r["trial_id"] for r in summary["front"]] == ["a", "b"]
    # hypervolume against (accuracy 0, sparsity 0): 0.9*0.5 + 0.8*(0.9-0.5)
    assert summary["hypervolume"] == pytest.approx(0.9 * 0.5 + 0.8 * 0.4)
    saved = json.loads((tmp_path / "pareto.json").read_text())
    assert [r["trial_id"] for r in saved["front"]] == ["a", "b"]
    assert (tmp_path / "pareto.png").stat().st_size > 0 and (tmp_path / "pareto.html").exists()
    assert (tmp_path / "results.csv").read_text().count("\n") == 5


def test_a_live_refresh_without_plots_writes_the_tables_only(tmp_path):
    rows = [{"trial_id": "a", "method": "magnitude", "target_sparsity": 0.5, "accuracy": 0.9, "sparsity": 0.5,
             "budget_fraction": 1.0, "status": "complete", "config": "{}"}]
    summary = write_pareto(tmp_path, rows, metric="accuracy", plots=False)
    assert [r["trial_id"] for r in summary["front"]] == ["a"]
    assert (tmp_path / "pareto.csv").exists() and (tmp_path / "pareto.json").exists()
    assert not (tmp_path / "pareto.png").exists() and not (tmp_path / "pareto.html").exists()


# ------------------------------------------------------------ verdicts, floor and constraints
from rayprune.search.results import Criteria, constraint_violations, front_report, load_search_dir  # noqa: E402


def _row(trial_id, accuracy, sparsity, status="complete", **extra):
    return {"trial_id": trial_id, "method": "magnitude", "target_sparsity": sparsity, "accuracy": accuracy,
            "sparsity": sparsity, "budget_fraction": 1.0 if status == "complete" else 0.5, "status": status,
            "config": "{}", **extra}


def test_collapsed_infeasible_and_failed_trials_are_never_on_the_front(tmp_path):
    # floor 0.5 on 100 examples: a trial needs accuracy > 0.5 + its standard error (~0.05)
    criteria = Criteria(metric="accuracy", floor=0.5, eval_examples=100, reference_metric=0.9,
                        constraints={"max_parameters": 1000, "max_latency_ms": None, "min_retained": None})
    rows = [
        _row("good", 0.85, 0.5, parameters=900),
        _row("chance", 0.52, 0.87, parameters=500),     # within a standard error of the floor
        _row("big", 0.90, 0.6, parameters=5000),        # best of all but too many parameters
        _row("nan", float("nan"), 0.0, status="failed", error="TrialFailed: non-finite training loss (nan) at step 2"),
        _row("sparse", 0.70, 0.9, parameters=300),
    ]
    summary = write_pareto(tmp_path, rows, metric="accuracy", criteria=criteria)
    verdicts = {r["trial_id"]: r["verdict"] for r in summary["rows"]}
    assert verdicts == {"good": "ok", "chance": "collapsed", "big": "infeasible", "nan": "failed", "sparse": "ok"}
    assert [r["trial_id"] for r in summary["front"]] == ["good", "sparse"]
    assert "non-finite training loss" in next(r for r in rows if r["trial_id"] == "nan")["verdict_reason"]
    # the hypervolume is measured from the floor: (0.85 - 0.5) * 0.5 + (0.70 - 0.5) * (0.9 - 0.5)
    assert summary["hypervolume"] == pytest.approx(0.35 * 0.5 + 0.2 * 0.4)
    saved = json.loads((tmp_path / "pareto.json").read_text())
    assert saved["hypervolume_reference_point"] == {"accuracy": 0.5, "sparsity": 0.0}
    assert saved["floor"] == 0.5 and saved["reference_metric"] == 0.9
    assert saved["verdicts"] == {"ok": 2, "collapsed": 1, "failed": 1, "infeasible": 1}
    assert saved["constraints_met"] == 3  # of the 4 full-budget trials, "big" is over the bound
    # pareto.csv shows the members, then the trials that would be members but for their verdict
    _, results, front = load_search_dir_with_meta(tmp_path)
    assert [r["trial_id"] for r in front] == ["good", "sparse"]
    table = (tmp_path / "pareto.csv").read_text()
    assert "chance" in table and "collapsed" in table and "big" in table and "infeasible" in table
    assert {r["trial_id"]: r["verdict"] for r in results}["chance"] == "collapsed"
    report = "\n".join(front_report(saved))
    assert "COLLAPSED" in report and "INFEASIBLE" in report and "floor accuracy: 0.5000" in report
    assert "met by 3 of 4" in report


def load_search_dir_with_meta(path):
    (path / "search.json").write_text("{}")
    return load_search_dir(path)


def test_min_metric_and_min_retained_collapse_trials_above_the_floor():
    criteria = Criteria(metric="accuracy", floor=0.5, eval_examples=1000, reference_metric=0.9,
                        min_metric=0.7, min_retained=0.9)
    assert criteria.verdict(_row("a", 0.65, 0.5))[0] == "collapsed"              # below min_metric
    assert criteria.verdict(_row("b", 0.75, 0.5, retained=0.75 / 0.9))[0] == "collapsed"  # retained 0.83
    assert criteria.verdict(_row("c", 0.85, 0.5, retained=0.85 / 0.9)) == ("ok", "")


def test_constraint_violations_are_relative_and_signed():
    constraints = {"min_retained": 0.9, "max_parameters": 1000, "max_latency_ms": 10.0}
    v = constraint_violations({"retained": 0.81, "parameters": 1500, "latency_ms": 5.0}, constraints)
    assert v == pytest.approx({"min_retained": 0.1, "max_parameters": 0.5, "max_latency_ms": -0.5})
    assert constraint_violations({"retained": 0.95}, constraints) == pytest.approx({"min_retained": -0.05 / 0.9})


def test_constraints_are_told_to_optuna_and_infeasible_trials_leave_best_trials():
    spec = parse_spec(SPACE, path="s.yaml")
    limiter = create_searcher(spec, constraints={"max_parameters": 1000, "min_retained": None})
    searcher = limiter.searcher
    for t in ("t1", "t2", "t3"):
        limiter.suggest(t)
    limiter.on_trial_complete("t1", {"accuracy": 0.8, "sparsity": 0.8, "budget_fraction": 1.0, "parameters": 900})
    limiter.on_trial_complete("t2", {"accuracy": 0.95, "sparsity": 0.9, "budget_fraction": 1.0, "parameters": 2000})
    limiter.on_trial_complete("t3", {"accuracy": 0.7, "sparsity": 0.3, "budget_fraction": 0.5})
    trials = searcher._ot_study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    assert trials[0].constraints == pytest.approx({"max_parameters": -0.1})
    assert trials[1].constraints == pytest.approx({"max_parameters": 1.0})  # infeasible
    # t2 dominates t1 but violates the bound: Optuna's Pareto set holds the feasible t1 only
    assert [t.values for t in searcher._ot_study.best_trials] == [[0.8, 0.8]]


@pytest.mark.parametrize("algorithm", ["tpe", "nsga2", "random"])
def test_every_sampler_survives_the_pickling_ray_does_before_the_first_trial(algorithm):
    """Ray's Tuner pickles the searcher (and its Optuna sampler) into the experiment directory;
    Optuna 5.1's NSGA-II sampler holds a thread lock, which made every nsga2 search fail there.
    The sampler must pickle, and still sample after unpickling."""
    import pickle

    from ray import cloudpickle

    from rayprune.search.searcher import SAMPLERS

    sampler = SAMPLERS[algorithm](seed=0)
    restored = pickle.loads(cloudpickle.dumps(sampler))
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=restored)
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=3)
    assert len(study.trials) == 3


def test_the_default_searcher_pickles(tmp_path):
    """The searcher a space file gets with the shipped defaults (no ``search:`` section)."""
    from ray import cloudpickle

    spec = parse_spec(dict(SPACE), path="s.yaml")  # SPACE has no search: section
    assert spec.algorithm == "tpe"
    searcher = create_searcher(spec, search_dir=tmp_path)
    cloudpickle.dumps(searcher)


def test_population_size_reaches_nsga2_and_makes_it_breed_from_full_budget_trials():
    """``search.population_size`` is NSGA-II's generation size.  A generation ends when that many
    of its trials are COMPLETE (full budget; ASHA-stopped ones are PRUNED), and only then does the
    sampler breed instead of sampling at random."""
    spec = parse_spec({**SPACE, "points_to_evaluate": [], "search": {"algorithm": "nsga2", "population_size": 4}},
                      path="s.yaml")
    limiter = create_searcher(spec)
    sampler = limiter.searcher._ot_study.sampler
    assert sampler._population_size == 4

    def generations():
        return [t.system_attrs.get(sampler._get_generation_key()) for t in limiter.searcher._ot_study.trials]

    for i in range(6):  # 6 trials, 2 of them stopped early: 4 complete close generation 0
        trial_id = f"t{i}"
        config = limiter.suggest(trial_id)
        fraction = 0.5 if i in (1, 3) else 1.0
        limiter.on_trial_complete(trial_id, {"accuracy": 0.5 + 0.05 * i, "sparsity": config["target_sparsity"],
                                             "budget_fraction": fraction})
    limiter.suggest("t6")
    assert generations() == [0] * 6 + [1]


# ------------------------------------------------------------ repeated proposals
GRID_SPACE = {**SPACE, "points_to_evaluate": [], "budget": {"num_samples": 50, "max_concurrent": 50},
              "search": {"algorithm": "random", "seed": 0},
              "space": {"method": {"choice": ["magnitude", "movement"]}, "target_sparsity": {"choice": [0.5, 0.9]},
                        "learning_rate": 1e-4, "magnitude.selection": {"choice": ["global", "layer"]}}}


def _full(config, accuracy=0.8):
    return {"accuracy": accuracy, "sparsity": config["target_sparsity"], "budget_fraction": 1.0}


def test_a_finite_space_runs_each_configuration_once_then_the_searcher_is_finished():
    """magnitude x 2 selections x 2 targets + movement x 2 targets = 6 configurations; random
    sampling repeats itself long before 50 draws, and no repeat becomes a trial."""
    from ray.tune.search import Searcher

    from rayprune.config.grid import config_key

    limiter = create_searcher(parse_spec(GRID_SPACE, path="s.yaml"))
    searcher = limiter.searcher
    assert len(searcher._grid) == 6
    configs = []
    for i in range(50):
        config = limiter.suggest(f"t{i}")
        if config == Searcher.FINISHED:
            break
        configs.append(config)
        limiter.on_trial_complete(f"t{i}", _full(config))
    assert len(configs) == 6 and len({config_key(c) for c in configs}) == 6
    assert all(c["learning_rate"] == 1e-4 for c in configs)  # constants stay in the config
    assert all(("magnitude.selection" in c) == (c["method"] == "magnitude") for c in configs)
    repeats = [t for t in searcher._ot_study.trials if "duplicate_of" in t.user_attrs]
    assert len(repeats) == searcher.repeats_skipped >= 1
    by_number = {t.number: t for t in searcher._ot_study.trials}
    for repeat in repeats:  # told the outcome of the trial it repeats
        first = by_number[repeat.user_attrs["duplicate_of"]]
        assert repeat.params == first.params and repeat.values == first.values and repeat.state == first.state


def test_a_repeat_of_a_running_trial_waits_for_its_outcome_and_shares_it():
    """Two configurations in flight; Optuna proposes the first again (a queued point): that
    Optuna trial is not run and is told what the first trial ends with, PRUNED included."""
    from optuna.trial import TrialState

    first = {"method": "magnitude", "target_sparsity": 0.5, "magnitude.selection": "global"}
    other = {"method": "movement", "target_sparsity": 0.9}
    spec = parse_spec({**GRID_SPACE, "points_to_evaluate": [first, first, other, first]}, path="s.yaml")
    limiter = create_searcher(spec)
    searcher = limiter.searcher
    a = limiter.suggest("a")
    b = limiter.suggest("b")  # the 2nd queued point repeats a (running): skipped, b gets `other`
    assert a["method"] == "magnitude" and b["method"] == "movement"
    waiting = [t for t in searcher._ot_study.trials if "duplicate_of" in t.user_attrs]
    assert len(waiting) == 1 and waiting[0].state == TrialState.RUNNING
    limiter.on_trial_complete("a", {"accuracy": 0.6, "sparsity": 0.3, "budget_fraction": 0.5})  # stopped early
    limiter.on_trial_complete("b", _full(b, 0.7))
    c = limiter.suggest("c")  # the 4th queued point repeats a (ended): told at once, c is new
    assert c not in (a, b)
    states = {t.number: t.state for t in searcher._ot_study.trials}
    repeats = [t for t in searcher._ot_study.trials if "duplicate_of" in t.user_attrs]
    assert len(repeats) == 2 and all(states[t.number] == TrialState.PRUNED for t in repeats)
    assert [t.values for t in searcher._ot_study.best_trials] == [[0.7, 0.9]]


def test_a_sampler_stuck_on_tried_configurations_gets_an_untried_one(monkeypatch):
    from rayprune.config.grid import config_key
    from rayprune.search import searcher as searcher_module

    monkeypatch.setattr(searcher_module, "MAX_REDRAWS", 2)
    first = {"method": "movement", "target_sparsity": 0.9}
    spec = parse_spec({**GRID_SPACE, "points_to_evaluate": [first] * 4}, path="s.yaml")
    limiter = create_searcher(spec)
    a = limiter.suggest("a")
    limiter.on_trial_complete("a", _full(a))
    # The three queued copies of a are repeats; after the second an untried configuration is
    # queued, and it comes out after the third.
    b = limiter.suggest("b")
    assert config_key(b) != config_key(a) and limiter.searcher.untried_drawn == 1
    assert limiter.searcher.repeats_skipped == 3


def test_skip_duplicates_false_runs_repeats_and_an_unbounded_space_never_finishes():
    from ray.tune.search import Searcher

    from rayprune.config.grid import config_key

    first = {"method": "movement", "target_sparsity": 0.9}
    spec = parse_spec({**GRID_SPACE, "points_to_evaluate": [first] * 3,
                       "search": {"algorithm": "random", "skip_duplicates": False}}, path="s.yaml")
    limiter = create_searcher(spec)
    configs = [limiter.suggest(f"t{i}") for i in range(10)]
    assert [config_key(c) for c in configs[:3]] == [config_key(configs[0])] * 3
    assert limiter.searcher.repeats_skipped == 0 and limiter.searcher._grid is None

    unbounded = parse_spec({**GRID_SPACE, "space": {"method": "magnitude", "target_sparsity": {"uniform": [0.5, 0.9]}}},
                           path="s.yaml")
    limiter = create_searcher(unbounded)
    assert limiter.searcher._grid is None
    for i in range(12):
        config = limiter.suggest(f"u{i}")
        assert config != Searcher.FINISHED
        limiter.on_trial_complete(f"u{i}", _full(config))


def test_a_searcher_pickled_before_repeats_were_skipped_resumes_running_repeats(tmp_path):
    """``--resume`` of a search directory written by an earlier rayprune unpickles a searcher
    without the repeat-skipping state: it goes on as it started, repeats run."""
    from ray import cloudpickle

    from rayprune.config.grid import config_key
    from rayprune.search.searcher import skip_duplicates_defaults

    first = {"method": "movement", "target_sparsity": 0.9}
    limiter = create_searcher(parse_spec({**GRID_SPACE, "points_to_evaluate": [first] * 2}, path="s.yaml"),
                              search_dir=tmp_path)
    for name in skip_duplicates_defaults():
        delattr(limiter.searcher, name)
    restored = cloudpickle.loads(cloudpickle.dumps(limiter))
    a, b = restored.suggest("a"), restored.suggest("b")
    assert config_key(a) == config_key(b) and restored.searcher.repeats_skipped == 0


def test_the_study_names_its_objectives_for_optuna_dashboard(tmp_path):
    import optuna

    from rayprune.search.searcher import STUDY_FILE

    create_searcher(parse_spec(dict(SPACE), path="s.yaml"), search_dir=tmp_path)
    study = optuna.load_study(study_name=parse_spec(dict(SPACE), path="s.yaml").name,
                              storage=f"sqlite:///{tmp_path / STUDY_FILE}")
    assert study.metric_names == ["accuracy", "sparsity"]
