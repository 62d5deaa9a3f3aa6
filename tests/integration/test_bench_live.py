"""The benchmark machinery on the real engine, at small sizes (the full run is `make demo`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from prefixcache import PromptLibrary
from prefixcache.bench.report import environment, grids, save
from prefixcache.bench.results import ArmRun
from prefixcache.bench.runner import Benchmark, BenchSettings
from prefixcache.bench.scenarios import (
    ALIGNED,
    APPEND_ONLY,
    GUIDE_LAYOUT,
    NAIVE,
    NO_REUSE,
    OPTIMIZED,
    PREFETCH,
    REFERENCE,
    SERVICE,
    USERS,
    WARMED,
    mixed_steps,
    single_steps,
    workflow_steps,
)
from prefixcache.bench.service import ServiceLauncher
from prefixcache.engine.local import LocalEngine
from prefixcache.llm.inspector import EngineInspector
from prefixcache.llm.interface import LLMInterface
from prefixcache.prompts.sizes import DEFAULT_TOOLS, TOOLS

pytestmark = pytest.mark.integration


Body = Callable[[Benchmark], Awaitable[list[ArmRun]]]


def run_bench(
    engine: LocalEngine, library: PromptLibrary, block_size: int, body: Body
) -> list[ArmRun]:
    async def go() -> list[ArmRun]:
        async with LLMInterface(engine.config) as llm:
            with EngineInspector(engine.base_url, engine.model) as inspector:
                return await body(Benchmark(llm, inspector, library, block_size))

    return asyncio.run(go())


def test_arms_reuse_exactly_what_they_should(
    engine: LocalEngine, live_library: PromptLibrary, block_size: int, tmp_path: Path
) -> None:
    steps = mixed_steps()[:3]  # frontend, backend, database: one tier, different roles

    async def body(bench: Benchmark) -> list[ArmRun]:
        arms = (NO_REUSE, NAIVE, OPTIMIZED, WARMED)
        return await bench.run_sequential("mixed", steps, arms, 1, 2, f"test-{tmp_path.name}")

    no_reuse, naive, optimized, warmed = run_bench(engine, live_library, block_size, body)
    assert [r.cached_tokens for r in no_reuse.tasks] == [0, 0, 0]
    assert [r.cached_tokens for r in naive.tasks] == [0, 0, 0]  # dynamic first: nothing shared
    assert optimized.tasks[0].cached_tokens == 0
    for r in optimized.tasks[1:]:  # later agents reuse the shared base + tier block exactly
        assert r.cached_tokens == r.predicted_cached and r.reuse_reached == 1.0
        # at least the shared base prompt's full blocks (2 of the compact prompts' 370 tokens)
        assert r.cached_tokens is not None and r.cached_tokens >= 2 * block_size
    assert len([r for r in warmed.requests if r.warmup]) == 3
    # every planned request was sent, none failed: the progress bar's total is right
    for run in (no_reuse, naive, optimized, warmed):
        assert run.complete and not run.failed
    for r in warmed.tasks:  # even task 1 hits after the warm-up
        assert r.cached_tokens == r.predicted_cached and r.reuse_reached == 1.0
    assert all(r.completion_tokens == 2 for run in (no_reuse, optimized) for r in run.tasks)

    settings = BenchSettings(scenarios=("mixed",), max_tokens=2)
    env = environment(
        engine_version="test",
        model=engine.model,
        block_size=block_size,
        device="cpu",
        base_url=engine.base_url,
        settings=settings,
        command="pytest",
    )
    all_grids = grids([no_reuse, naive, optimized, warmed], live_library.tiers, settings)
    paths = save(tmp_path / "out", env, [no_reuse, naive, optimized, warmed], all_grids)
    assert [p.name for p in paths] == [
        "results.json",
        "report.md",
        "ttft_per_request.png",
        "total_time_per_scenario.png",
    ]
    data = json.loads(paths[0].read_text())
    assert len(data["runs"]) == 4 and data["environment"]["block_size"] == block_size
    report = paths[1].read_text()
    assert "speedup vs no-reuse" in report and "TIER_1_DEFAULT" in report
    assert all(p.stat().st_size > 1000 for p in paths[2:])


def test_multiturn_append_only_reuses_the_history(
    engine: LocalEngine, live_library: PromptLibrary, block_size: int, tmp_path: Path
) -> None:
    async def body(bench: Benchmark) -> list[ArmRun]:
        arms = (GUIDE_LAYOUT, APPEND_ONLY)
        return await bench.run_multiturn(arms, 1, 16, f"test-mt-{tmp_path.name}", turns=6)

    guide, append = run_bench(engine, live_library, block_size, body)
    for run in (guide, append):
        for r in run.tasks[1:]:
            assert r.cached_tokens == r.predicted_cached
    # append-only: each turn reuses the whole previous prompt (up to its last full block)
    for before, after in zip(append.tasks, append.tasks[1:], strict=False):
        assert (after.cached_tokens or 0) >= before.prompt_tokens - block_size
    # the guide's layout keeps the last 3 exchanges inside the system prompt: once that window
    # slides (turn 5 on), the history no longer matches and only the static prefix is reused
    assert (guide.tasks[-1].cached_tokens or 0) < (append.tasks[-1].cached_tokens or 0)


def test_concurrent_sessions_run_and_count(
    engine: LocalEngine, live_library: PromptLibrary, block_size: int
) -> None:
    async def body(bench: Benchmark) -> list[ArmRun]:
        return [
            await bench.run_concurrent(
                OPTIMIZED, 1, 2, "test-concurrent", sessions=3, per_session=2
            )
        ]

    [run] = run_bench(engine, live_library, block_size, body)
    assert len(run.tasks) == 6 and {r.session for r in run.tasks} == {0, 1, 2}
    assert run.wall_time < run.total_time  # requests overlapped
    assert sum(r.cached_tokens or 0 for r in run.tasks) > 0


def test_single_steps_are_the_guides_ten_tasks() -> None:
    steps = single_steps()
    assert len(steps) == 10 and {s.agent_type for s in steps} == {"frontend-engineer"}
    assert len({s.task for s in steps}) == 10


def test_reference_aligned_prefetch_and_steady_state(
    engine: LocalEngine, live_library: PromptLibrary, block_size: int, tmp_path: Path
) -> None:
    """The guide's reference layout, block alignment and prefetch on the real engine:
    every request after the first gets exactly the cached tokens /tokenize predicts, in
    the cold pass and in the steady state."""
    steps = mixed_steps()[:3]

    async def body(bench: Benchmark) -> list[ArmRun]:
        arms = (REFERENCE, ALIGNED, PREFETCH)
        return await bench.run_sequential(
            "mixed", steps, arms, 1, 2, f"levers-{tmp_path.name}", passes=2, tool_time=0.2
        )

    runs = run_bench(engine, live_library, block_size, body)
    by = {(r.arm, r.phase): r for r in runs}
    assert set(by) == {
        (a, p) for a in ("reference", "aligned", "prefetch") for p in ("cold", "steady")
    }
    for run in runs:
        assert run.complete and not run.failed
        later = run.ok_tasks[1:] if run.phase == "cold" else run.ok_tasks
        for r in later:
            assert r.cached_tokens == r.predicted_cached, (run.arm, run.phase, r.index)
    # the reference shares its whole main prompt between agents: the role-free layout
    ref = by[("reference", "cold")].tasks
    assert all((r.cached_tokens or 0) >= 2 * block_size for r in ref[1:])
    # prefetch prefilled the two agents first met after step 1, in the background
    prefetches = [r for r in by[("prefetch", "cold")].requests if r.warmup]
    assert sorted(r.agent_type for r in prefetches) == ["backend-engineer", "database-engineer"]
    # so their first requests found the agent's whole static prefix cached
    for r in by[("prefetch", "cold")].tasks[1:]:
        assert (r.cached_tokens or 0) >= (
            by[("aligned", "cold")].tasks[r.index - 1].cached_tokens or 0
        )
    # steady state: other users and sessions, same agents, prefixes warm
    for arm in ("aligned", "prefetch"):
        steady = by[(arm, "steady")].tasks
        assert len(steady) == 3 and all(r.pass_no == 2 for r in steady)
        # only the dynamic suffix (and at most a partial block) is prefilled again
        fresh = [r.prompt_tokens - (r.cached_tokens or 0) for r in steady]
        assert all(f < 300 for f in fresh), (arm, fresh)


def test_alignment_puts_shared_layers_on_block_boundaries(
    engine: LocalEngine, live_library: PromptLibrary, block_size: int
) -> None:
    from prefixcache import align_to_blocks
    from prefixcache.layout.alignment import BlockAligner
    from prefixcache.layout.cache_model import common_prefix_len, predicted_cached_tokens

    library = live_library
    with EngineInspector(engine.base_url, engine.model) as inspector:
        padding = align_to_blocks(
            library.composer, inspector, block_size, ["frontend-engineer", "code-reviewer"]
        )
        assert padding  # every layer chain of both agents was measured
        chain, join = library.composer.layer_chains("code-reviewer")[0]
        base_end = BlockAligner(inspector, block_size).boundary(
            library.composer.chain_text(chain), join
        )
        a = library.compose_prompt(agent_type="frontend-engineer", session_id="a")
        b = library.compose_prompt(agent_type="code-reviewer", session_id="b")
        ta = inspector.tokenize_messages([{"role": "system", "content": a.text}])
        tb = inspector.tokenize_messages([{"role": "system", "content": b.text}])
    # the shared base ends on a block boundary, so an agent of another tier reuses all of it
    assert base_end % block_size == 0
    assert predicted_cached_tokens(len(tb), common_prefix_len(ta, tb), block_size) == base_end


def test_service_arm_runs_the_guides_steps_through_prefixcache_serve(
    engine: LocalEngine, live_library: PromptLibrary, block_size: int, tmp_path: Path
) -> None:
    """The service arm: a real `prefixcache serve` started by the benchmark, warmed up
    before its first request, the workflow sent as a /tasks chain (one caller, the plan
    declared) in a cold and a steady pass, beside the reference sent to the engine. (The
    /chat stream the arm reads is checked in tests/test_bench_service_units.py and
    test_service_live.py.)"""
    launcher = ServiceLauncher(
        live_library.settings, engine.base_url, tmp_path / "svc", USERS, TOOLS, DEFAULT_TOOLS
    )
    agents = len(live_library.tiers.agents())

    async def body(bench: Benchmark) -> list[ArmRun]:
        bench.services = launcher
        salt = f"svc-{tmp_path.name}"
        return await bench.run_sequential(
            "workflow", workflow_steps()[:3], (REFERENCE, SERVICE), 1, 2, salt, passes=2
        )

    runs = run_bench(engine, live_library, block_size, body)
    by = {(r.arm, r.phase): r for r in runs}
    assert launcher.starts == 1  # one fresh service for the arm run (both passes)
    for phase in ("cold", "steady"):
        run = by[("service", phase)]
        assert run.complete and not run.failed, run.failed
        for r in run.tasks:
            assert r.overhead is not None and 0 < r.overhead < r.processing_time
            assert r.ttft is not None and r.ttft < r.processing_time
            # warmed at start: even each agent's first request finds its whole static
            # prefix cached (only the dynamic suffix, and at most a block, is prefilled)
            assert r.prompt_tokens - (r.cached_tokens or 0) < 400, (phase, r.index)
    cold = by[("service", "cold")]
    # the start-up warm-up: every agent's prefix under the new tenant salt, reported apart
    assert cold.warmed_prefixes == agents and cold.warmup_time > 0
    # the reference's first request is cold; the service's first is not
    reference, service = by[("reference", "cold")].tasks[0], cold.tasks[0]
    assert reference.cached_tokens == 0
    assert (service.cached_tokens or 0) > 0.8 * service.prompt_tokens
    # the service process was stopped by its PID
    assert len(launcher.pids) == 1 and not Path(f"/proc/{launcher.pids[0]}").exists()
