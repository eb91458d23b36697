"""The live front's refresh budget (rayprune.search.driver.LiveFrontRefresh), on a fake clock:
refreshes stay within LIVE_REFRESH_SHARE of the wall time and plots are redrawn at most every
LIVE_PLOT_INTERVAL_S."""

from __future__ import annotations

from rayprune.search import driver
from rayprune.search.driver import LiveFrontRefresh


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_trials_of_real_length_refresh_after_every_end_and_plots_follow_the_interval():
    clock, calls = FakeClock(), []

    def write(ended, plots):
        calls.append((len(ended), plots))
        clock.now += 0.1  # a cheap refresh

    refresh = LiveFrontRefresh(write, clock=clock)
    for ended in range(1, 6):
        refresh(list(range(ended)))
        clock.now += 10.0  # a trial ends every 10 s
    assert [n for n, _ in calls] == [1, 2, 3, 4, 5]
    gap = driver.LIVE_PLOT_INTERVAL_S
    plotted_at = [i * 10.1 for i, (_, plots) in enumerate(calls) if plots]
    assert plotted_at[0] == 0 and all(b - a >= gap for a, b in zip(plotted_at, plotted_at[1:]))
    assert len(plotted_at) < len(calls)


def test_refreshes_that_cost_more_than_their_share_are_skipped_then_catch_up():
    clock, calls = FakeClock(), []

    def write(ended, plots):
        calls.append(len(ended))
        clock.now += 2.0  # an expensive refresh (many trials ended)

    refresh = LiveFrontRefresh(write, clock=clock)
    for ended in range(1, 201):  # 200 trials end 1 s apart
        refresh(list(range(ended)))
        clock.now += 1.0
    wall = clock.now - 1000.0
    spent = 2.0 * len(calls)
    assert spent <= driver.LIVE_REFRESH_BURST_S + 2.0 + driver.LIVE_REFRESH_SHARE * wall
    assert 1 < len(calls) < 200 and calls[0] == 1
    # Steady state: one 2-s refresh per 2 / LIVE_REFRESH_SHARE = 40 s; each sees what ended meanwhile.
    assert calls == sorted(calls) and calls[-1] >= 200 - 2 / driver.LIVE_REFRESH_SHARE
