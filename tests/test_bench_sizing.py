"""`--fit-minutes`: the plan shrinks on a slower machine and its estimate is the model's."""

from __future__ import annotations

import pytest

from prefixcache.bench.runner import BenchSettings
from prefixcache.bench.sizing import LEVELS, PromptTokens, chosen_apps, estimate, fit
from prefixcache.engine.calibration import Calibration


def speed(rate: float) -> Calibration:
    return Calibration(1100, 4400, 1100 / rate, 1024, 0.2, 0.02, rate, "2026-12-07T00:00:00+00:00")


def tokens() -> PromptTokens:
    from prefixcache import PromptLibrary, Settings

    agents = PromptLibrary(Settings()).tiers.agents()
    return PromptTokens(
        prompt={a: 4300 for a in agents}, prefix={a: 4100 for a in agents}, base=3900, app=2400
    )


SETTINGS = BenchSettings(
    scenarios=("single", "mixed", "workflow", "unmodified-apps"),
    arms=("no-reuse", "reference", "optimized", "service"),
    passes=2,
)


def plan_for(rate: float, minutes: float) -> tuple[int, int, int, float, bool]:
    plan, fits = fit(minutes * 60, SETTINGS, tokens=tokens(), speed=speed(rate))
    return plan.tasks, plan.apps, plan.app_requests, plan.seconds, fits


def test_a_slower_machine_gets_a_smaller_plan_that_fits() -> None:
    fast = plan_for(1300, 6)
    slow = plan_for(170, 6)
    assert fast[4] and fast[3] <= 360
    assert slow[:3] < fast[:3]
    assert plan_for(1300, 600)[:3] == LEVELS[0]  # all of it, given the time


def test_nothing_fits_gives_the_smallest_plan_and_says_so() -> None:
    tasks, apps, requests, seconds, fits = plan_for(20, 1)
    assert (tasks, apps, requests) == LEVELS[-1] and not fits and seconds > 60


def test_the_estimate_is_the_work_at_the_measured_rate() -> None:
    single_no_reuse = BenchSettings(scenarios=("single",), arms=("no-reuse",), max_tokens=1)
    one = estimate(single_no_reuse, (2, 3, 3), tokens=tokens(), speed=speed(430))
    # two uncached requests of 4,300 tokens at 430 tokens/s, plus 0.2 s each
    assert one.seconds == pytest.approx(2 * (10 + 0.2))
    assert "2 tasks per scenario" in one.describe()


def test_chosen_apps_keep_the_stable_one() -> None:
    assert [a.name for a in chosen_apps(3)][-1] == "already-stable"
    assert len(chosen_apps(3)) == 3 and len(chosen_apps(7)) == 7
