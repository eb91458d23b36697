"""rayprune.methods.schedules: values and update steps worked out by hand."""

from __future__ import annotations

import pytest

from rayprune.methods.schedules import (
    SCHEDULE_KINDS,
    SparsitySchedule,
    cubic_sparsity,
    linear_sparsity,
)


# ---------------------------------------------------------------------------- ramp functions
def test_cubic_start_mid_end():
    assert cubic_sparsity(0.0, 0.0, 0.8) == pytest.approx(0.0)
    # final + (initial - final) * (1 - 0.5)^3 = 0.8 - 0.8 / 8 = 0.7
    assert cubic_sparsity(0.5, 0.0, 0.8) == pytest.approx(0.7)
    assert cubic_sparsity(1.0, 0.0, 0.8) == pytest.approx(0.8)
    # With an initial sparsity: 0.9 + (0.3 - 0.9) * 0.125 = 0.825
    assert cubic_sparsity(0.5, 0.3, 0.9) == pytest.approx(0.825)


def test_cubic_prunes_fast_early_and_slow_late():
    values = [cubic_sparsity(x / 10, 0.0, 0.8) for x in range(11)]
    steps = [b - a for a, b in zip(values, values[1:])]
    assert all(d > 0 for d in steps)
    assert all(a > b for a, b in zip(steps, steps[1:]))  # increments shrink


def test_ramps_clamp_the_position():
    assert cubic_sparsity(-1.0, 0.1, 0.8) == pytest.approx(0.1)
    assert cubic_sparsity(2.0, 0.1, 0.8) == pytest.approx(0.8)
    assert linear_sparsity(-1.0, 0.1, 0.8) == pytest.approx(0.1)
    assert linear_sparsity(2.0, 0.1, 0.8) == pytest.approx(0.8)


def test_linear_midpoint():
    assert linear_sparsity(0.5, 0.2, 0.8) == pytest.approx(0.5)


# ---------------------------------------------------------------------------- SparsitySchedule
def test_ramp_steps_for_default_fractions():
    # start 0.1, end 0.7 of 100 steps: dense for steps 0-9, ramp on 10..69, final from 69.
    assert SparsitySchedule(final_sparsity=0.8).steps(100) == (10, 69)


def test_whole_run_cubic_values_at_start_mid_end():
    sched = SparsitySchedule(final_sparsity=0.8, start=0.0, end=1.0, interval=1)
    assert sched.steps(11) == (0, 10)
    assert sched.sparsity_at(0, 11) == pytest.approx(0.0)
    assert sched.sparsity_at(5, 11) == pytest.approx(0.7)  # x = 5/10 = 0.5
    assert sched.sparsity_at(10, 11) == pytest.approx(0.8)
    assert sched.sparsity_at(50, 11) == pytest.approx(0.8)  # after the run: stays final


def test_dense_before_start_and_final_after_end():
    sched = SparsitySchedule(final_sparsity=0.9, start=0.1, end=0.7, interval=10)
    assert [sched.sparsity_at(s, 100) for s in (0, 9)] == [0.0, 0.0]
    assert sched.sparsity_at(10, 100) == pytest.approx(0.0)  # ramp starts at initial = 0
    # x = (39 - 10) / 59 at step 39.
    x = 29 / 59
    assert sched.sparsity_at(39, 100) == pytest.approx(0.9 - 0.9 * (1 - x) ** 3)
    assert sched.sparsity_at(69, 100) == pytest.approx(0.9)
    assert sched.sparsity_at(99, 100) == pytest.approx(0.9)


def test_initial_sparsity_jumps_at_start():
    sched = SparsitySchedule(
        final_sparsity=0.8, initial_sparsity=0.3, start=0.2, end=0.8, interval=1
    )
    first, last = sched.steps(50)
    assert (first, last) == (10, 39)
    assert sched.sparsity_at(first - 1, 50) == 0.0
    assert sched.sparsity_at(first, 50) == pytest.approx(0.3)  # the jump, all at once
    values = [sched.sparsity_at(s, 50) for s in range(first, last + 1)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(0.8)


def test_linear_kind():
    sched = SparsitySchedule(final_sparsity=0.6, kind="linear", start=0.0, end=1.0, interval=1)
    assert sched.sparsity_at(5, 11) == pytest.approx(0.3)
    assert sched.sparsity_at(2, 11) == pytest.approx(0.12)


@pytest.mark.parametrize("kind", ["constant", "oneshot"])
def test_constant_and_oneshot_prune_once_at_start(kind):
    sched = SparsitySchedule(final_sparsity=0.5, kind=kind, start=0.25, end=0.75)
    assert sched.sparsity_at(24, 100) == 0.0
    assert sched.sparsity_at(25, 100) == 0.5
    assert sched.sparsity_at(60, 100) == 0.5
    assert [s for s in range(100) if sched.should_update(s, 100)] == [25]


def test_should_update_pattern():
    sched = SparsitySchedule(final_sparsity=0.8, start=0.1, end=0.7, interval=10)
    # First and last ramp step, and every 10 steps from the first; frozen after the ramp.
    updates = [s for s in range(100) if sched.should_update(s, 100)]
    assert updates == [10, 20, 30, 40, 50, 60, 69]


def test_should_update_every_step_with_interval_one():
    sched = SparsitySchedule(final_sparsity=0.5, start=0.0, end=1.0, interval=1)
    assert [s for s in range(6) if sched.should_update(s, 6)] == [0, 1, 2, 3, 4, 5]


def test_fraction_done():
    sched = SparsitySchedule(final_sparsity=0.8, start=0.1, end=0.7)
    assert sched.fraction_done(5, 100) == 0.0
    assert sched.fraction_done(10, 100) == 0.0
    assert sched.fraction_done(10 + 59 // 2, 100) == pytest.approx(29 / 59)
    assert sched.fraction_done(69, 100) == 1.0
    assert sched.fraction_done(90, 100) == 1.0


def test_start_equal_to_end_prunes_once_to_final():
    sched = SparsitySchedule(final_sparsity=0.6, start=0.5, end=0.5, interval=1)
    assert sched.steps(10) == (5, 5)
    assert sched.sparsity_at(4, 10) == 0.0
    assert sched.sparsity_at(5, 10) == pytest.approx(0.6)
    assert [s for s in range(10) if sched.should_update(s, 10)] == [5]


def test_ramp_bounds_are_not_moved_by_float_noise():
    # 0.7 * 90 is 62.99999999999999 and 0.07 * 100 is 7.000000000000001 in binary floats;
    # the ramp must still start at step 63 and end at step 6.
    assert SparsitySchedule(final_sparsity=0.5, start=0.7, end=0.9).steps(90)[0] == 63
    assert SparsitySchedule(final_sparsity=0.5, start=0.0, end=0.07).steps(100)[1] == 6


def test_short_runs_stay_inside_the_run():
    sched = SparsitySchedule(final_sparsity=0.5, start=0.1, end=1.0, interval=1)
    assert sched.steps(1) == (0, 0)
    assert sched.sparsity_at(0, 1) == pytest.approx(0.5)


def test_replace_returns_a_validated_copy():
    sched = SparsitySchedule(final_sparsity=0.5)
    other = sched.replace(final_sparsity=0.9, interval=5)
    assert (other.final_sparsity, other.interval, sched.final_sparsity) == (0.9, 5, 0.5)
    with pytest.raises(ValueError, match="interval=0"):
        sched.replace(interval=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="exponential"), r"kind='exponential'"),
        (dict(final_sparsity=1.0), r"final_sparsity=1.0"),
        (dict(final_sparsity=-0.1), r"final_sparsity=-0.1"),
        (dict(initial_sparsity=1.2), r"initial_sparsity=1.2"),
        (dict(start=0.8, end=0.5), r"start=0.8, end=0.5"),
        (dict(start=-0.1), r"start=-0.1"),
        (dict(end=1.5), r"end=1.5"),
        (dict(interval=0), r"interval=0"),
    ],
)
def test_validation_errors_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SparsitySchedule(**{"final_sparsity": 0.5, **kwargs})


def test_total_steps_must_be_positive():
    with pytest.raises(ValueError, match="total_steps=0"):
        SparsitySchedule(final_sparsity=0.5).sparsity_at(0, 0)


def test_schedule_kinds_are_listed():
    assert SCHEDULE_KINDS == ("cubic", "linear", "constant", "oneshot")
    for kind in SCHEDULE_KINDS:
        SparsitySchedule(final_sparsity=0.5, kind=kind)
