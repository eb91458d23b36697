"""MO-ASHA with ``objective.constraints``: at a rung, a report that violates a constraint ranks
after every feasible one (fake trials, no cluster)."""

from __future__ import annotations

from dataclasses import dataclass
from unittest import mock

from ray.tune.execution.tune_controller import TuneController
from ray.tune.schedulers import TrialScheduler

from rayprune.search.schedulers import MultiObjectiveASHA, create_scheduler

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP
OBJECTIVES = [("accuracy", "max"), ("sparsity", "max")]


@dataclass(frozen=True)
class FakeTrial:
    trial_id: str


def _scheduler(**constraints):
    return MultiObjectiveASHA(objectives=OBJECTIVES, max_t=4, grace_period=1, reduction_factor=2,
                              constraints=constraints)


def test_an_infeasible_report_ranks_after_feasible_ones():
    controller = mock.create_autospec(TuneController, instance=True)
    sched = _scheduler(min_retained=0.9)
    trials = [FakeTrial(i) for i in ("a", "b", "c")]
    for t in trials:
        sched.on_trial_add(controller, t)
    # a: feasible, modest.  b: dominates a on both objectives but retains only 0.80 of the
    # reference: infeasible, so it is stopped (2 trials at the rung keep 1, and a ranks first).
    assert sched.on_trial_result(controller, trials[0], {"training_iteration": 1, "accuracy": 0.7,
                                                          "sparsity": 0.5, "retained": 0.95}) == CONTINUE
    assert sched.on_trial_result(controller, trials[1], {"training_iteration": 1, "accuracy": 0.9,
                                                          "sparsity": 0.8, "retained": 0.80}) == STOP
    # c: feasible and dominated by b; it still continues: it is the second feasible of 3 (keep 2).
    assert sched.on_trial_result(controller, trials[2], {"training_iteration": 1, "accuracy": 0.6,
                                                          "sparsity": 0.4, "retained": 0.91}) == CONTINUE
    assert controller.mock_calls == []


def test_without_constraints_the_same_reports_decide_by_the_objectives_alone():
    controller = mock.create_autospec(TuneController, instance=True)
    sched = _scheduler()
    a, b = FakeTrial("a"), FakeTrial("b")
    sched.on_trial_add(controller, a)
    sched.on_trial_add(controller, b)
    sched.on_trial_result(controller, a, {"training_iteration": 1, "accuracy": 0.7, "sparsity": 0.5, "retained": 0.95})
    assert sched.on_trial_result(controller, b, {"training_iteration": 1, "accuracy": 0.9, "sparsity": 0.8,
                                                 "retained": 0.80}) == CONTINUE


def test_constraint_state_survives_save_and_restore(tmp_path):
    controller = mock.create_autospec(TuneController, instance=True)
    sched = create_scheduler("mo_asha", objectives=OBJECTIVES, max_t=4, grace_period=1, reduction_factor=2,
                             constraints={"max_parameters": 100, "max_latency_ms": None})
    a = FakeTrial("a")
    sched.on_trial_add(controller, a)
    sched.on_trial_result(controller, a, {"training_iteration": 1, "accuracy": 0.9, "sparsity": 0.8,
                                          "parameters": 150})
    sched.save(str(tmp_path / "s.json"))
    again = create_scheduler("mo_asha", objectives=OBJECTIVES, max_t=4, grace_period=1, reduction_factor=2,
                             constraints={"max_parameters": 100})
    again.restore(str(tmp_path / "s.json"))
    assert again.state_dict() == sched.state_dict()
    assert again.state_dict()["brackets"][0][-1]["violations"] == {"a": 0.5}
