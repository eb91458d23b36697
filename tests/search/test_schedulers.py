"""MultiObjectiveASHA decisions, driven with fake trials and a mock controller (no cluster).

The single-objective cases are checked side by side against Ray's own ``ASHAScheduler`` on the
same stream of results; the multi-objective cases are small rungs worked out by hand.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from unittest import mock

import numpy as np
import pytest
from ray.tune.execution.tune_controller import TuneController
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from rayprune.search.schedulers import SCHEDULER_KINDS, MultiObjectiveASHA, create_scheduler

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP
NAMES = ("accuracy", "sparsity")
ACC_SPARSITY = [("accuracy", "max"), ("sparsity", "max")]


@dataclass(frozen=True)
class FakeTrial:
    """All a scheduler may read from a trial is its id."""

    trial_id: str


def result(t, *objectives, names=NAMES, time_attr="training_iteration"):
    """A reported result: the time attribute plus one value per objective, in ``names`` order."""
    out = {time_attr: t}
    out.update(zip(names, objectives))
    return out


@pytest.fixture
def controller():
    """A controller mock: the schedulers must decide without calling into it."""
    ctrl = mock.create_autospec(TuneController, instance=True)
    yield ctrl
    assert ctrl.mock_calls == []


def _add(sched, controller, *ids):
    trials = [FakeTrial(i) for i in ids]
    for trial in trials:
        sched.on_trial_add(controller, trial)
    return trials


# ---------------------------------------------------------------------------- parity with Ray ASHA
def _record_stream(sched, controller, *, rng, n_trials, concurrency, max_jump):
    """Run a random asynchronous search against ``sched`` and log every call and decision.

    Trials start ``concurrency`` at a time; a random running trial reports next, advancing its
    time by 1..max_jump (jumps skip rungs, as a trial reporting every few epochs does); a STOP
    is followed by ``on_trial_complete`` with the same result, as Tune's controller does.
    Objective values are continuous random draws, so they are untied.
    """
    log, running, waiting, clock = [], {}, [f"t{i:03d}" for i in range(n_trials)], {}
    while waiting or running:
        while waiting and len(running) < concurrency:
            trial = FakeTrial(waiting.pop(0))
            sched.on_trial_add(controller, trial)
            log.append(("add", trial, None, None))
            running[trial.trial_id], clock[trial.trial_id] = trial, 0
        trial = running[list(running)[rng.integers(len(running))]]
        clock[trial.trial_id] += int(rng.integers(1, max_jump + 1))
        res = result(clock[trial.trial_id], float(rng.normal()))
        decision = sched.on_trial_result(controller, trial, res)
        log.append(("result", trial, res, decision))
        if decision == STOP:
            sched.on_trial_complete(controller, trial, res)
            log.append(("complete", trial, res, None))
            del running[trial.trial_id]
    return log


def _replay(sched, controller, log):
    decisions = []
    for kind, trial, res, _ in log:
        if kind == "add":
            sched.on_trial_add(controller, trial)
        elif kind == "result":
            decisions.append(sched.on_trial_result(controller, trial, res))
        else:
            sched.on_trial_complete(controller, trial, res)
    return decisions


@pytest.mark.parametrize("mode", ["max", "min"])
@pytest.mark.parametrize(
    "max_t, grace_period, reduction_factor, brackets, max_jump",
    [
        (16, 1, 2, 1, 1),
        (27, 1, 3, 1, 1),
        (64, 1, 4, 1, 3),
        (20, 2, 2, 1, 2),
        (30, 1, 2.5, 1, 1),
        (32, 1, 2, 3, 2),
    ],
)
def test_single_objective_decides_exactly_as_ray_asha(
    controller, mode, max_t, grace_period, reduction_factor, brackets, max_jump
):
    budget = dict(max_t=max_t, grace_period=grace_period, reduction_factor=reduction_factor)
    np.random.seed(123)  # both schedulers draw brackets from the global numpy RNG
    ray_asha = ASHAScheduler(metric="accuracy", mode=mode, brackets=brackets, **budget)
    log = _record_stream(
        ray_asha,
        controller,
        rng=np.random.default_rng(7),
        n_trials=60,
        concurrency=6,
        max_jump=max_jump,
    )
    expected = [decision for kind, _, _, decision in log if kind == "result"]
    # The stream is only a real check if ASHA stopped trials early and also let some through.
    early = [
        d for (kind, _, res, d) in log if kind == "result" and res["training_iteration"] < max_t
    ]
    assert STOP in early and CONTINUE in early

    np.random.seed(123)
    ours = MultiObjectiveASHA(objectives=[("accuracy", mode)], brackets=brackets, **budget)
    assert _replay(ours, controller, log) == expected


# ---------------------------------------------------------------------------- hand-made MO rungs
def test_two_objectives_keep_the_pareto_front_at_a_rung(controller):
    # rf=2, grace 1, max_t 4: rungs at t = 1, 2, 4.  All trials report at t=1.
    sched = MultiObjectiveASHA(
        objectives=ACC_SPARSITY, max_t=4, grace_period=1, reduction_factor=2
    )
    a, b, c, d, e = _add(sched, controller, "a", "b", "c", "d", "e")
    # First at the rung: nothing to compare with.
    assert sched.on_trial_result(controller, a, result(1, 0.90, 0.5)) == CONTINUE
    # n=2, keep 1: b is dominated by a.
    assert sched.on_trial_result(controller, b, result(1, 0.80, 0.4)) == STOP
    # n=3, keep 2: c trades accuracy for sparsity, so it shares the first front with a.
    assert sched.on_trial_result(controller, c, result(1, 0.70, 0.9)) == CONTINUE
    # n=4, keep 2: d dominates everyone.
    assert sched.on_trial_result(controller, d, result(1, 0.95, 0.95)) == CONTINUE
    # n=5, keep 3: fronts {d}, {a, c}, {b, e} (e is dominated by c), so e is 4th or 5th.
    assert sched.on_trial_result(controller, e, result(1, 0.60, 0.6)) == STOP


def test_a_trade_off_trial_survives_where_scalar_asha_stops_it(controller):
    history = [("a", 0.90, 0.5), ("b", 0.80, 0.4)]
    ray_asha = ASHAScheduler(metric="accuracy", mode="max", max_t=4, reduction_factor=2)
    mo = MultiObjectiveASHA(objectives=ACC_SPARSITY, max_t=4, reduction_factor=2)
    for sched in (ray_asha, mo):
        for tid, acc, sparsity in history:
            (trial,) = _add(sched, controller, tid)
            sched.on_trial_result(controller, trial, result(1, acc, sparsity))
    (c_ray,) = _add(ray_asha, controller, "c")
    (c_mo,) = _add(mo, controller, "c")
    # Accuracy 0.70 is below the median (0.85) of the rung, but sparsity 0.9 is the best seen.
    assert ray_asha.on_trial_result(controller, c_ray, result(1, 0.70, 0.9)) == STOP
    assert mo.on_trial_result(controller, c_mo, result(1, 0.70, 0.9)) == CONTINUE


@pytest.mark.parametrize(
    "newcomer, expected",
    [
        # Crowding (both ranges 1):  c=(0.9, 0.1) sits near boundary a=(1, 0).
        # (0.4, 0.6): accuracy neighbours 0 and 0.9 -> 0.9, sparsity neighbours 0.1 and 1
        # -> 0.9, total 1.8 > c's 0.6 + 0.6 = 1.2: third of four, kept (keep = ceil(4/1.5) = 3).
        ((0.4, 0.6), CONTINUE),
        # (0.95, 0.05) crowds c: its distance 0.05 + 0.05 = 0.1 < c's 0.95 + 0.95: fourth, stopped.
        ((0.95, 0.05), STOP),
    ],
)
def test_crowding_breaks_ties_within_a_front(controller, newcomer, expected):
    sched = MultiObjectiveASHA(objectives=ACC_SPARSITY, max_t=10, reduction_factor=1.5)
    a, b, c, d = _add(sched, controller, "a", "b", "c", "d")
    assert sched.on_trial_result(controller, a, result(1, 1.0, 0.0)) == CONTINUE
    # n=2, keep ceil(2/1.5)=2.
    assert sched.on_trial_result(controller, b, result(1, 0.0, 1.0)) == CONTINUE
    # n=3, keep 2: all on one front; a and b are boundaries (inf), c is interior: stopped.
    assert sched.on_trial_result(controller, c, result(1, 0.9, 0.1)) == STOP
    assert sched.on_trial_result(controller, d, result(1, *newcomer)) == expected


def test_identical_vectors_tie_in_favour_of_the_arriving_trial(controller):
    # As Ray's ASHA continues a trial whose value equals the cutoff.
    sched = MultiObjectiveASHA(objectives=ACC_SPARSITY, max_t=4, reduction_factor=2)
    a, b, c = _add(sched, controller, "a", "b", "c")
    assert sched.on_trial_result(controller, a, result(1, 0.8, 0.5)) == CONTINUE
    assert sched.on_trial_result(controller, b, result(1, 0.8, 0.5)) == CONTINUE
    # A worse one after the tie is still stopped.
    assert sched.on_trial_result(controller, c, result(1, 0.7, 0.5)) == STOP


def test_later_rungs_compare_only_trials_that_reached_them(controller):
    sched = MultiObjectiveASHA(objectives=ACC_SPARSITY, max_t=8, reduction_factor=2)
    a, b, c, d = _add(sched, controller, "a", "b", "c", "d")
    assert sched.on_trial_result(controller, a, result(1, 0.9, 0.5)) == CONTINUE
    assert sched.on_trial_result(controller, b, result(1, 0.8, 0.5)) == STOP  # dominated by a
    # a reaches rung 2 alone: nothing to compare with, however much worse it got.
    assert sched.on_trial_result(controller, a, result(2, 0.5, 0.5)) == CONTINUE
    # Between rungs (t=3) no decision is taken.
    assert sched.on_trial_result(controller, a, result(3, 0.1, 0.1)) == CONTINUE
    # c at rung 1 is judged against a's and b's rung-1 vectors (third of three, keep 2), not
    # against a's worse rung-2 vector, which it would beat.
    assert sched.on_trial_result(controller, c, result(1, 0.75, 0.5)) == STOP
    # d passes rung 1 and is then judged at rung 2 against a's rung-2 vector only.
    assert sched.on_trial_result(controller, d, result(1, 0.95, 0.5)) == CONTINUE
    assert sched.on_trial_result(controller, d, result(2, 0.4, 0.5)) == STOP


# ---------------------------------------------------------------------------- NaN / missing / time
@pytest.mark.parametrize(
    "bad",
    [
        result(1, float("nan"), 0.99),
        result(1, 0.99, None),
        {"training_iteration": 1, "accuracy": 0.99},  # sparsity missing
    ],
    ids=["nan", "none", "missing"],
)
def test_nan_or_missing_objective_counts_as_worst(controller, bad):
    sched = MultiObjectiveASHA(objectives=ACC_SPARSITY, max_t=4, reduction_factor=2)
    a, b = _add(sched, controller, "a", "b")
    # n=2, keep 1: a poor but complete vector beats one with a NaN, however good its other value.
    assert sched.on_trial_result(controller, a, result(1, 0.1, 0.1)) == CONTINUE
    assert sched.on_trial_result(controller, b, bad) == STOP
    # At a rung of its own there is nothing to compare with, as for any first arrival.
    assert sched.on_trial_result(controller, b, {**bad, "training_iteration": 2}) == CONTINUE


def test_single_objective_nan_is_stopped_unlike_ray_asha(controller):
    # Ray's ASHA lets a NaN reward through (NaN < cutoff is False); NaN counts as worst here.
    sched = MultiObjectiveASHA(objectives=[("loss", "min")], max_t=4, reduction_factor=2)
    a, b = _add(sched, controller, "a", "b")
    assert sched.on_trial_result(controller, a, result(1, 0.3, names=("loss",))) == CONTINUE
    nan = result(1, float("nan"), names=("loss",))
    assert sched.on_trial_result(controller, b, nan) == STOP


def test_result_without_time_attr_is_ignored(controller):
    sched = MultiObjectiveASHA(objectives=ACC_SPARSITY, max_t=4, reduction_factor=2)
    a, b = _add(sched, controller, "a", "b")
    assert sched.on_trial_result(controller, a, {"accuracy": 0.9, "sparsity": 0.9}) == CONTINUE
    # Nothing was recorded: b, arriving first at the rung, continues whatever it reports.
    assert sched.on_trial_result(controller, b, result(1, 0.0, 0.0)) == CONTINUE
    assert sched.state_dict()["brackets"][0][-1]["recorded"].keys() == {"b"}


def test_trial_is_stopped_at_max_t(controller):
    sched = MultiObjectiveASHA(objectives=ACC_SPARSITY, max_t=4, reduction_factor=2)
    (a,) = _add(sched, controller, "a")
    assert sched.on_trial_result(controller, a, result(3, 0.9, 0.9)) == CONTINUE
    assert sched.on_trial_result(controller, a, result(4, 0.9, 0.9)) == STOP


def test_custom_time_attr(controller):
    sched = MultiObjectiveASHA(
        objectives=ACC_SPARSITY, time_attr="step", max_t=100, grace_period=10, reduction_factor=2
    )
    a, b = _add(sched, controller, "a", "b")
    # Below the grace period: never judged.
    assert sched.on_trial_result(controller, a, result(5, 0.9, 0.9, time_attr="step")) == CONTINUE
    assert sched.on_trial_result(controller, b, result(5, 0.1, 0.1, time_attr="step")) == CONTINUE
    assert sched.on_trial_result(controller, a, result(10, 0.9, 0.9, time_attr="step")) == CONTINUE
    assert sched.on_trial_result(controller, b, result(10, 0.1, 0.1, time_attr="step")) == STOP


def test_removed_and_errored_trials_are_forgotten(controller):
    sched = MultiObjectiveASHA(objectives=ACC_SPARSITY, max_t=4, reduction_factor=2)
    a, b = _add(sched, controller, "a", "b")
    sched.on_trial_remove(controller, a)
    sched.on_trial_error(controller, b)
    assert sched.state_dict()["trial_bracket"] == {}


# ---------------------------------------------------------------------------- Tune-facing API
def test_metric_is_the_primary_objective_and_search_properties_are_refused():
    sched = MultiObjectiveASHA(objectives=[("accuracy", "max"), ("latency", "min")])
    assert sched.metric == "accuracy"
    assert sched.objectives == (("accuracy", "max"), ("latency", "min"))
    assert sched.set_search_properties(None, None) is True
    assert sched.set_search_properties("accuracy", None) is False
    assert sched.set_search_properties(None, "max") is False
    assert sched.set_search_properties("accuracy", "max", config={}) is False


def test_debug_string_names_the_objectives():
    text = MultiObjectiveASHA(objectives=ACC_SPARSITY).debug_string()
    assert "accuracy (max)" in text and "sparsity (max)" in text


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(objectives=[]), ValueError, r"objectives"),
        (dict(objectives="accuracy"), TypeError, r"objectives='accuracy'"),
        (dict(objectives=[("accuracy", "maximize")]), ValueError, r"mode='maximize'"),
        (dict(objectives=[("accuracy",)]), TypeError, r"\('accuracy',\)"),
        (dict(objectives=[("", "max")]), ValueError, r"name=''"),
        (dict(objectives=[("a", "max"), ("a", "min")]), ValueError, r"\['a'\]"),
        (dict(max_t=0), ValueError, r"max_t=0"),
        (dict(grace_period=0), ValueError, r"grace_period=0"),
        (dict(max_t=5, grace_period=6), ValueError, r"grace_period=6"),
        (dict(reduction_factor=1), ValueError, r"reduction_factor=1"),
        (dict(reduction_factor="2"), TypeError, r"reduction_factor='2'"),
        (dict(max_t=float("inf")), ValueError, r"max_t=inf"),
        (dict(time_attr=""), TypeError, r"time_attr=''"),
        (dict(brackets=0), ValueError, r"brackets=0"),
        (dict(brackets=2.0), TypeError, r"brackets=2.0"),
        # max_t / grace = 4 with rf 2 gives three rungs, so at most three brackets.
        (dict(max_t=4, reduction_factor=2, brackets=4), ValueError, r"\[1, 3\].*brackets=4"),
    ],
)
def test_constructor_validates_options(kwargs, error, match):
    kwargs = {"objectives": ACC_SPARSITY, **kwargs}
    with pytest.raises(error, match=match):
        MultiObjectiveASHA(**kwargs)


# ---------------------------------------------------------------------------- save / restore
def _feed(sched, controller, steps):
    out = []
    for tid, t, acc, sparsity in steps:
        out.append(sched.on_trial_result(controller, FakeTrial(tid), result(t, acc, sparsity)))
    return out


def test_save_and_restore_round_trip(controller, tmp_path):
    options = dict(objectives=ACC_SPARSITY, max_t=16, reduction_factor=2)
    before = MultiObjectiveASHA(**options)
    _add(before, controller, "a", "b", "c", "d")
    _feed(
        before,
        controller,
        [("a", 1, 0.9, 0.5), ("b", 1, 0.8, float("nan")), ("c", 1, 0.7, 0.9), ("a", 2, 0.9, 0.6)],
    )
    path = tmp_path / "scheduler.json"
    before.save(str(path))
    # An explicit, readable dict, not a pickled __dict__.
    saved = json.loads(path.read_text())
    assert set(saved) == {"version", "options", "num_stopped", "trial_bracket", "brackets"}
    assert saved["brackets"][0][-1]["recorded"]["a"] == [-0.9, -0.5]
    assert math.isnan(saved["brackets"][0][-1]["recorded"]["b"][1])

    after = MultiObjectiveASHA(**options)
    after.restore(str(path))
    assert json.dumps(after.state_dict()) == json.dumps(before.state_dict())
    # Both now decide the same on the same future results.
    future = [("d", 1, 0.75, 0.55), ("c", 2, 0.95, 0.95), ("d", 2, 0.1, 0.1), ("c", 4, 0.5, 0.5)]
    assert _feed(after, controller, future) == _feed(before, controller, future)


def test_restore_refuses_other_options(controller, tmp_path):
    path = tmp_path / "scheduler.json"
    MultiObjectiveASHA(objectives=ACC_SPARSITY, reduction_factor=2).save(str(path))
    other = MultiObjectiveASHA(objectives=ACC_SPARSITY, reduction_factor=3)
    with pytest.raises(ValueError, match="reduction_factor: saved 2, now 3"):
        other.restore(str(path))


# ---------------------------------------------------------------------------- create_scheduler
def test_create_scheduler_asha_is_rays_asha_on_the_primary_objective():
    sched = create_scheduler(
        "asha", objectives=[("loss", "min"), ("sparsity", "max")], max_t=8, reduction_factor=2
    )
    assert type(sched) is ASHAScheduler
    assert sched.metric == "loss"
    # mode="min": a lower loss continues, a higher one is stopped.
    a, b, c = (FakeTrial(i) for i in "abc")
    for trial in (a, b, c):
        sched.on_trial_add(None, trial)
    sched.on_trial_result(None, a, {"training_iteration": 1, "loss": 0.5})
    assert sched.on_trial_result(None, b, {"training_iteration": 1, "loss": 0.4}) == CONTINUE
    assert sched.on_trial_result(None, c, {"training_iteration": 1, "loss": 0.9}) == STOP


def test_create_scheduler_mo_asha_and_fifo():
    mo = create_scheduler("mo_asha", objectives=ACC_SPARSITY, max_t=8, grace_period=2)
    assert isinstance(mo, MultiObjectiveASHA)
    assert mo.objectives == tuple(ACC_SPARSITY)
    assert mo.state_dict()["options"]["grace_period"] == 2
    fifo = create_scheduler("fifo", objectives=ACC_SPARSITY)
    assert type(fifo) is FIFOScheduler


def test_create_scheduler_validates_kind_and_options():
    with pytest.raises(ValueError, match=r"kind='hyperband'.*'asha', 'mo_asha', 'fifo'"):
        create_scheduler("hyperband", objectives=ACC_SPARSITY)
    assert SCHEDULER_KINDS == ("asha", "mo_asha", "fifo")
    # Ray's ASHAScheduler would only assert; we raise a ValueError naming the option.
    with pytest.raises(ValueError, match="reduction_factor=1"):
        create_scheduler("asha", objectives=ACC_SPARSITY, reduction_factor=1)
    with pytest.raises(ValueError, match="mode='up'"):
        create_scheduler("fifo", objectives=[("accuracy", "up")])


# ---------------------------------------------------------------------------- real Tune run
@pytest.mark.integration
def test_mo_asha_inside_a_real_tune_run(tmp_path):
    """Tune accepts the scheduler (strict metric check, refused TuneConfig metric) and it stops
    trials early while the two extremes of the front run to max_t."""
    ray = pytest.importorskip("ray")
    from ray import tune

    def trainable(config):
        # Six trials on one trade-off line: accuracy grows with q, sparsity falls with it.
        for i in range(1, 9):
            tune.report({"accuracy": config["q"] * (1 - 1 / (i + 1)), "sparsity": 1 - config["q"]})

    started = not ray.is_initialized()
    if started:
        # "local": a cluster of our own, even if another process has one running on this host.
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        sched = create_scheduler(
            "mo_asha", objectives=ACC_SPARSITY, max_t=8, grace_period=1, reduction_factor=2
        )
        tuner = tune.Tuner(
            trainable,
            param_space={"q": tune.grid_search([0.1, 0.5, 0.9, 0.3, 0.7, 0.2])},
            tune_config=tune.TuneConfig(scheduler=sched),
            run_config=tune.RunConfig(storage_path=str(tmp_path), name="mo", verbose=0),
        )
        grid = tuner.fit()
        assert grid.num_errors == 0
        iterations = {r.config["q"]: r.metrics["training_iteration"] for r in grid}
        # q = 0.1 (sparsest) and q = 0.9 (most accurate) are boundary points of every rung.
        assert iterations[0.1] == 8 and iterations[0.9] == 8
        assert min(iterations.values()) < 8
        with pytest.raises(ValueError, match="metric"):
            tune.Tuner(
                trainable,
                param_space={"q": 0.5},
                tune_config=tune.TuneConfig(scheduler=sched, metric="accuracy", mode="max"),
                run_config=tune.RunConfig(storage_path=str(tmp_path), name="refused", verbose=0),
            ).fit()
    finally:
        if started:
            ray.shutdown()
