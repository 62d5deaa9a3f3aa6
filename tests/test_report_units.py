"""The benchmark's plan, report grids and status from synthetic results (no server)."""

from __future__ import annotations

from prefixcache import AgentTierMap
from prefixcache.bench.report import grids, run_status, summary_grid
from prefixcache.bench.results import ArmRun, RequestResult
from prefixcache.bench.runner import BenchSettings
from prefixcache.bench.scenarios import ARM_NAMES, SCENARIOS


def row(arm: str, index: int, time: float, cached: int | None, **kw: object) -> RequestResult:
    fields: dict[str, object] = dict(
        scenario="single",
        arm=arm,
        repeat=1,
        max_tokens=32,
        index=index,
        agent_type="frontend-engineer",
        tier="TIER_1_DEFAULT",
        warmup=False,
        prompt_tokens=4000,
        cached_tokens=cached,
        predicted_cached=cached,
        completion_tokens=32,
        ttft=time / 2,
        processing_time=time,
    )
    fields.update(kw)
    return RequestResult(**fields)  # type: ignore[arg-type]


def arm_run(
    arm: str, rows: list[RequestResult], planned: int | None = None, repeat: int = 1
) -> ArmRun:
    return ArmRun("single", arm, repeat, 32, tuple(rows), 0.0, 1.0, planned or len(rows))


def test_planned_requests_count_every_tick() -> None:
    """The progress bar's total: tasks, warm-ups (concurrent ones too) and the sweep."""
    settings = BenchSettings(
        scenarios=("single", "workflow", "multiturn", "concurrent"),
        sweep=(16, 32),
        sessions=3,
        requests_per_session=2,
        passes=2,
        arms=ARM_NAMES,
    )
    # eight sequential arms (service included: its start-up warm-up is not a request),
    # two passes; warmed adds one warm-up per distinct agent, prefetch one prefetch per
    # agent first met after step 1
    single = 8 * 10 * 2 + 1 + 0
    workflow = 8 * 20 * 2 + 19 + 18  # 19 distinct agents; 18 first met after step 1
    multiturn = 4 * 8
    concurrent = 5 * 6 + 3  # five arms; warmed adds one warm-up per distinct agent
    assert settings.planned_requests() == single * 2 + workflow + multiturn + concurrent


def test_summary_grid_speedup_and_failures() -> None:
    base = arm_run("no-reuse", [row("no-reuse", i, 3.0, 0) for i in (1, 2)])
    opt = arm_run(
        "optimized",
        [
            row("optimized", 1, 3.0, 0),
            row("optimized", 2, 1.0, None, success=False, error="ProviderTimeoutError: slow"),
        ],
    )
    grid = summary_grid([base, opt], 32)
    by_arm = {r[1]: r for r in grid.rows}
    assert by_arm["no-reuse"][4] == "6.0" and by_arm["optimized"][4] == "3.0"  # failed not in total
    assert by_arm["optimized"][3] == "1" and by_arm["optimized"][6] == "2.00x"
    titles = [g.title for g in grids([base, opt], AgentTierMap(), BenchSettings())]
    assert "Failed requests (1)" in titles


def test_spread_is_reported_over_repeats() -> None:
    runs = [
        arm_run("no-reuse", [row("no-reuse", 1, t, 0)], repeat=r) for r, t in ((1, 3.0), (2, 4.0))
    ] + [
        arm_run("optimized", [row("optimized", 1, t, 0)], repeat=r) for r, t in ((1, 1.0), (2, 2.0))
    ]
    grid = summary_grid(runs, 32)
    assert grid.headers[-1] == "spread over 2 repeats"
    optimized = next(r for r in grid.rows if r[1] == "optimized")
    assert optimized[-1] == "1.0-2.0 s (2.00-3.00x)"


def test_status_names_what_is_missing() -> None:
    settings = BenchSettings(scenarios=("single",), arms=("no-reuse", "optimized"))
    done = arm_run("no-reuse", [row("no-reuse", i, 1.0, 0) for i in range(1, 11)])
    partial = arm_run("optimized", [row("optimized", 1, 1.0, 0)], planned=10)
    status = run_status([done, partial], settings, "interrupted (Ctrl-C)")
    assert not status["complete"] and status["missing"] == ["single/optimized/m32/r1"]
    assert "INCOMPLETE (interrupted (Ctrl-C)): 11 of 20 requests sent" in status["text"]
    whole = run_status([done, arm_run("optimized", list(partial.requests) * 10)], settings)
    assert whole["complete"] and whole["text"].startswith("complete: 20 requests")


def test_scenarios_and_arms_are_typed() -> None:
    single = SCENARIOS["single"]
    assert [a.name for a in single.arms] == [
        "no-reuse",
        "naive",
        "reference",
        "optimized",
        "aligned",
        "prefetch",
        "warmed",
        "service",
    ]
    assert single.arm("no-reuse").unique_salt and single.arm("warmed").warm  # type: ignore[union-attr]
    assert [a.name for a in SCENARIOS["multiturn"].arms] == [
        "no-reuse",
        "guide-layout",
        "append-only",
        "service",
    ]
