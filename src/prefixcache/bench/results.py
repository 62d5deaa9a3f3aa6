"""Benchmark results: one row per request (a failed request is a row too), grouped per
arm run. Plain data, read by the report; never reaches back into the runner."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..llm.models import hit_rate


@dataclass(frozen=True)
class RequestResult:
    scenario: str
    arm: str
    repeat: int
    max_tokens: int
    index: int  # 1-based within the arm; 0 for warm-up requests
    agent_type: str
    tier: str
    warmup: bool
    prompt_tokens: int
    cached_tokens: int | None
    predicted_cached: int | None  # what vLLM can reuse at most (None: not predictable)
    completion_tokens: int
    ttft: float | None
    processing_time: float
    session: int = 0
    success: bool = True
    error: str | None = None  # the failure, for a failed request
    #: time this request waited for its own arm's prefetch to finish (beyond tool time)
    stall: float = 0.0
    #: 1: the first (cold) pass over the scenario's tasks; 2..: steady-state passes
    pass_no: int = 1
    #: the ``service`` arm: the client's time minus the engine time the service measured
    overhead: float | None = None

    @property
    def hit_rate(self) -> float | None:
        return hit_rate(self.cached_tokens, self.prompt_tokens) if self.success else None

    @property
    def reuse_reached(self) -> float | None:
        """measured / predicted cached tokens (1.0 = all that vLLM can reuse)."""
        if (
            not self.success
            or self.predicted_cached is None
            or self.cached_tokens is None
            or self.predicted_cached == 0
        ):
            return None
        return self.cached_tokens / self.predicted_cached


@dataclass(frozen=True)
class ArmRun:
    """One arm of one scenario (at one max_tokens and repeat)."""

    scenario: str
    arm: str
    repeat: int
    max_tokens: int
    requests: tuple[RequestResult, ...]
    warmup_time: float
    wall_time: float
    #: how many requests this arm was planned to send (warm-ups included)
    planned: int = 0
    #: "cold" (the first pass) or "steady" (passes 2..n, prefixes already warm)
    phase: str = "cold"
    #: prefixes warmed before the arm's requests (the service's start-up warm-up)
    warmed_prefixes: int = 0

    @property
    def complete(self) -> bool:
        return len(self.requests) >= self.planned

    @property
    def tasks(self) -> list[RequestResult]:
        """The counted requests (warm-ups excluded), failed ones included."""
        return [r for r in self.requests if not r.warmup]

    @property
    def ok_tasks(self) -> list[RequestResult]:
        return [r for r in self.tasks if r.success]

    @property
    def failed(self) -> list[RequestResult]:
        return [r for r in self.requests if not r.success]

    @property
    def total_time(self) -> float:
        """Sum of the successful tasks' request times (and any wait for the arm's own
        prefetch); warm-up and prefetch requests themselves not included."""
        return sum(r.processing_time + r.stall for r in self.ok_tasks)

    @property
    def hit_rate(self) -> float | None:
        tasks = self.ok_tasks
        if not tasks or any(r.cached_tokens is None for r in tasks):
            return None
        prompt = sum(r.prompt_tokens for r in tasks)
        return sum(r.cached_tokens or 0 for r in tasks) / prompt if prompt else None


def as_dict(run: ArmRun) -> dict[str, Any]:
    """An arm run as plain JSON-able data, with the derived figures."""
    requests = []
    for r in run.requests:
        data = asdict(r)
        data["hit_rate"] = r.hit_rate
        data["reuse_reached"] = r.reuse_reached
        requests.append(data)
    return {
        "scenario": run.scenario,
        "arm": run.arm,
        "repeat": run.repeat,
        "max_tokens": run.max_tokens,
        "planned": run.planned,
        "phase": run.phase,
        "complete": run.complete,
        "failed": len(run.failed),
        "total_time": run.total_time,
        "warmup_time": run.warmup_time,
        "wall_time": run.wall_time,
        "warmed_prefixes": run.warmed_prefixes,
        "hit_rate": run.hit_rate,
        "requests": requests,
    }


def group_runs(
    runs: Sequence[ArmRun], phase: str | None = "cold"
) -> dict[tuple[str, int, str], list[ArmRun]]:
    """Arm runs of one phase (None: all) by (scenario, max_tokens, arm), repeats
    together, in first-seen order."""
    out: dict[tuple[str, int, str], list[ArmRun]] = {}
    for run in runs:
        if phase is None or run.phase == phase:
            out.setdefault((run.scenario, run.max_tokens, run.arm), []).append(run)
    return out


def time_of(run: ArmRun) -> float:
    """An arm run's time: sum of request times, or wall time for concurrent sessions."""
    return run.wall_time if run.scenario == "concurrent" else run.total_time


def total_of(runs: Sequence[ArmRun]) -> float:
    """Median over repeats of the arm's time (see ``time_of``)."""
    return float(statistics.median([time_of(r) for r in runs]))
