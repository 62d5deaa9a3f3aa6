"""The live benchmark: real agent workflows on a real vLLM server, arms side by side.

Arms (all on the same server, in one run):

- ``no-reuse``: optimized layout, but a unique ``cache_salt`` per request: nothing reused.
- ``naive``: the dynamic context placed before the static prompt (a common layout).
- ``optimized``: ``compose_prompt`` (static prefix + dynamic suffix).
- ``warmed``: optimized, plus each agent's static prefix prefilled once (max_tokens=1)
  before the first task.

Every arm runs under its own ``cache_salt`` (per scenario, arm, repeat and max_tokens), so
one arm's cached blocks can never help another; arms run one after the other. Requests
decode exactly ``max_tokens`` tokens (``ignore_eos``) so arms do the same decode work.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._client import LLMInterface
from ._inspect import EngineInspector, common_prefix_len, predicted_cached_tokens
from ._library import PromptLibrary
from ._models import LLMResponse, Message, hit_rate
from ._workloads import (
    MULTITURN_TURNS,
    Step,
    concurrent_steps,
    mixed_steps,
    single_steps,
    workflow_steps,
)

ARMS = ("no-reuse", "naive", "optimized", "warmed")
MULTITURN_ARMS = ("no-reuse", "guide-layout", "append-only")
CONCURRENT_ARMS = ("no-reuse", "optimized", "warmed")
SEQUENTIAL = {"single": single_steps, "mixed": mixed_steps, "workflow": workflow_steps}


@dataclass(frozen=True)
class BenchSettings:
    scenarios: tuple[str, ...] = ("single",)
    arms: tuple[str, ...] = ARMS + MULTITURN_ARMS[1:]
    repeat: int = 1
    max_tokens: int = 32
    sweep: tuple[int, ...] = ()
    sessions: int = 8
    requests_per_session: int = 3
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def arms_for(self, scenario: str) -> list[str]:
        pool = {"multiturn": MULTITURN_ARMS, "concurrent": CONCURRENT_ARMS}.get(scenario, ARMS)
        return [a for a in pool if a in self.arms]

    def planned_requests(self) -> int:
        total = 0
        for scenario in self.scenarios:
            arms = self.arms_for(scenario)
            if scenario in SEQUENTIAL:
                steps = SEQUENTIAL[scenario]()
                per_arm = len(steps)
                warm = len({s.agent_type for s in steps})
                n = sum(per_arm + (warm if a == "warmed" else 0) for a in arms)
                total += n * (
                    1
                    + len([m for m in self.sweep if m != self.max_tokens]) * (scenario == "single")
                )
            elif scenario == "multiturn":
                total += len(arms) * len(MULTITURN_TURNS)
            elif scenario == "concurrent":
                total += len(arms) * self.sessions * self.requests_per_session
        return total * self.repeat


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

    @property
    def hit_rate(self) -> float | None:
        return hit_rate(self.cached_tokens, self.prompt_tokens)

    @property
    def reuse_reached(self) -> float | None:
        """measured / predicted cached tokens (1.0 = all that vLLM can reuse)."""
        if (
            self.predicted_cached is None
            or self.cached_tokens is None
            or self.predicted_cached == 0
        ):
            return None
        return self.cached_tokens / self.predicted_cached


@dataclass(frozen=True)
class ArmRun:
    scenario: str
    arm: str
    repeat: int
    max_tokens: int
    requests: tuple[RequestResult, ...]
    warmup_time: float
    wall_time: float

    @property
    def tasks(self) -> list[RequestResult]:
        return [r for r in self.requests if not r.warmup]

    @property
    def total_time(self) -> float:
        """Sum of the tasks' request times (sequential scenarios); warm-up not included."""
        return sum(r.processing_time for r in self.tasks)

    @property
    def hit_rate(self) -> float | None:
        tasks = self.tasks
        if any(r.cached_tokens is None for r in tasks):
            return None
        prompt = sum(r.prompt_tokens for r in tasks)
        return sum(r.cached_tokens or 0 for r in tasks) / prompt if prompt else None


ProgressFn = Callable[[str], None]


class Benchmark:
    """Runs scenarios and arms against one server."""

    def __init__(
        self,
        llm: LLMInterface,
        inspector: EngineInspector,
        library: PromptLibrary,
        block_size: int,
        *,
        on_request: ProgressFn | None = None,
    ) -> None:
        self.llm = llm
        self.inspector = inspector
        self.library = library
        self.block_size = block_size
        self._on_request = on_request or (lambda _msg: None)

    # -- prompt layouts -------------------------------------------------------------
    def messages(self, arm: str, step: Step) -> list[Message]:
        prompt = self.library.compose_prompt(agent_type=step.agent_type, **step.prompt_inputs())
        if arm == "naive":
            system = prompt.suffix.strip("\n") + "\n\n" + prompt.prefix
        else:
            system = prompt.text
        return [{"role": "system", "content": system}, {"role": "user", "content": step.task}]

    def warmup_messages(self, agent_type: str) -> list[Message]:
        """The agent's static prefix (and the fixed suffix header), nothing dynamic."""
        prompt = self.library.compose_prompt(agent_type=agent_type)
        return [{"role": "system", "content": prompt.text}, {"role": "user", "content": "Ready."}]

    # -- one request ------------------------------------------------------------------
    async def _send(
        self,
        messages: Sequence[Message],
        *,
        salt: str,
        max_tokens: int,
        agent_type: str,
        seen: list[list[int]] | None,
    ) -> tuple[LLMResponse, int | None]:
        predicted: int | None = None
        if seen is not None:
            tokens = await asyncio.to_thread(self.inspector.tokenize_messages, messages)
            shared = max((common_prefix_len(tokens, t) for t in seen), default=0)
            predicted = predicted_cached_tokens(len(tokens), shared, self.block_size)
            seen.append(tokens)
        response = await self.llm.chat_completion(
            messages, max_tokens=max_tokens, cache_salt=salt, agent_type=agent_type, ignore_eos=True
        )
        return response, predicted

    def _result(
        self,
        scenario: str,
        arm: str,
        repeat: int,
        max_tokens: int,
        index: int,
        agent: str,
        response: LLMResponse,
        predicted: int | None,
        *,
        warmup: bool = False,
        session: int = 0,
    ) -> RequestResult:
        profile = self.library.tiers.profile(agent)
        result = RequestResult(
            scenario=scenario,
            arm=arm,
            repeat=repeat,
            max_tokens=max_tokens,
            index=index,
            agent_type=profile.agent_type,
            tier=profile.tier.value,
            warmup=warmup,
            prompt_tokens=response.prompt_tokens,
            cached_tokens=response.cached_tokens,
            predicted_cached=predicted,
            completion_tokens=response.usage["completion_tokens"],
            ttft=response.ttft,
            processing_time=response.processing_time,
            session=session,
        )
        label = "warm-up" if warmup else f"#{index}"
        self._on_request(f"{scenario} {arm} {label} {agent}")
        return result

    async def _warm_up(
        self,
        agents: Sequence[str],
        scenario: str,
        arm: str,
        repeat: int,
        salt: str,
        seen: list[list[int]] | None,
    ) -> list[RequestResult]:
        """Prefill each distinct agent's static prefix once (max_tokens=1) under the arm's salt."""
        results = []
        for agent in dict.fromkeys(agents):
            response, predicted = await self._send(
                self.warmup_messages(agent), salt=salt, max_tokens=1, agent_type=agent, seen=seen
            )
            results.append(
                self._result(scenario, arm, repeat, 1, 0, agent, response, predicted, warmup=True)
            )
        return results

    # -- scenarios --------------------------------------------------------------------
    async def run_sequential(
        self,
        scenario: str,
        steps: Sequence[Step],
        arm: str,
        repeat: int,
        max_tokens: int,
        salt: str,
    ) -> ArmRun:
        seen: list[list[int]] = []
        started = time.perf_counter()
        results: list[RequestResult] = []
        if arm == "warmed":
            agents = [s.agent_type for s in steps]
            results = await self._warm_up(agents, scenario, arm, repeat, salt, seen)
        warmup_time = sum(r.processing_time for r in results)
        for i, step in enumerate(steps, 1):
            unique = arm == "no-reuse"
            response, predicted = await self._send(
                self.messages(arm, step),
                salt=f"{salt}-{i}" if unique else salt,
                max_tokens=max_tokens,
                agent_type=step.agent_type,
                seen=None if unique else seen,
            )
            results.append(
                self._result(
                    scenario,
                    arm,
                    repeat,
                    max_tokens,
                    i,
                    step.agent_type,
                    response,
                    0 if unique else predicted,
                )
            )
        return ArmRun(
            scenario,
            arm,
            repeat,
            max_tokens,
            tuple(results),
            warmup_time,
            time.perf_counter() - started,
        )

    async def run_multiturn(
        self, arm: str, repeat: int, max_tokens: int, salt: str, turns: int | None = None
    ) -> ArmRun:
        agent = "frontend-engineer"
        history: list[Message] = []
        results: list[RequestResult] = []
        seen: list[list[int]] = []
        started = time.perf_counter()
        for i, turn in enumerate(MULTITURN_TURNS[:turns], 1):
            if arm == "guide-layout":
                recent = [f"{m['role']}: {m['content']}" for m in history[-6:]]
                system = self.library.compose_prompt(
                    agent_type=agent,
                    session_id="multiturn-1",
                    user_name="Alice",
                    available_tools=["file_read", "file_write"],
                    recent_context=recent,
                ).text
                messages: list[Message] = [
                    {"role": "system", "content": system},
                    {"role": "user", "content": turn},
                ]
            else:  # append-only (and no-reuse, which sends the same prompts under unique salts)
                system = self.library.compose_prompt(
                    agent_type=agent,
                    session_id="multiturn-1",
                    user_name="Alice",
                    available_tools=["file_read", "file_write"],
                ).text
                messages = [
                    {"role": "system", "content": system},
                    *history,
                    {"role": "user", "content": turn},
                ]
            unique = arm == "no-reuse"
            response, predicted = await self._send(
                messages,
                salt=f"{salt}-{i}" if unique else salt,
                max_tokens=max_tokens,
                agent_type=agent,
                seen=None if unique else seen,
            )
            results.append(
                self._result(
                    "multiturn",
                    arm,
                    repeat,
                    max_tokens,
                    i,
                    agent,
                    response,
                    0 if unique else predicted,
                )
            )
            history += [
                {"role": "user", "content": turn},
                {"role": "assistant", "content": response.content},
            ]
        return ArmRun(
            "multiturn", arm, repeat, max_tokens, tuple(results), 0.0, time.perf_counter() - started
        )

    async def run_concurrent(
        self, arm: str, repeat: int, max_tokens: int, salt: str, sessions: int, per_session: int
    ) -> ArmRun:
        plan = concurrent_steps(sessions, per_session)
        warmups: list[RequestResult] = []
        if arm == "warmed":
            agents = [steps[0].agent_type for steps in plan]
            warmups = await self._warm_up(agents, "concurrent", arm, repeat, salt, None)
        warmup_time = sum(r.processing_time for r in warmups)

        async def session(number: int, steps: list[Step]) -> list[RequestResult]:
            out = []
            for i, step in enumerate(steps, 1):
                unique = arm == "no-reuse"
                response, _ = await self._send(
                    self.messages(arm, step),
                    salt=f"{salt}-{number}-{i}" if unique else salt,
                    max_tokens=max_tokens,
                    agent_type=step.agent_type,
                    seen=None,
                )
                out.append(
                    self._result(
                        "concurrent",
                        arm,
                        repeat,
                        max_tokens,
                        i,
                        step.agent_type,
                        response,
                        0 if unique else None,
                        session=number,
                    )
                )
            return out

        started = time.perf_counter()
        finished = await asyncio.gather(*(session(n, steps) for n, steps in enumerate(plan)))
        wall = time.perf_counter() - started
        results = tuple(warmups + [r for rs in finished for r in rs])
        return ArmRun("concurrent", arm, repeat, max_tokens, results, warmup_time, wall)

    async def warm_up_engine(self) -> None:
        """One short, uncounted request under a unique salt: a fresh server's first request is
        slower (lazy initialisation), and that must not be charged to the first arm."""
        await self.llm.chat_completion(
            [{"role": "user", "content": "Say OK."}],
            max_tokens=2,
            cache_salt=f"engine-warmup-{uuid.uuid4().hex}",
        )

    async def run(self, settings: BenchSettings) -> list[ArmRun]:
        await self.warm_up_engine()
        runs: list[ArmRun] = []
        for repeat in range(1, settings.repeat + 1):
            for scenario in settings.scenarios:
                token_counts = [settings.max_tokens]
                if scenario == "single":
                    token_counts += [m for m in settings.sweep if m != settings.max_tokens]
                for max_tokens in token_counts:
                    for arm in settings.arms_for(scenario):
                        salt = f"bench-{settings.run_id}-{scenario}-{arm}-r{repeat}-m{max_tokens}"
                        runs.append(
                            await self._run_arm(scenario, arm, repeat, max_tokens, salt, settings)
                        )
        return runs

    async def _run_arm(
        self,
        scenario: str,
        arm: str,
        repeat: int,
        max_tokens: int,
        salt: str,
        settings: BenchSettings,
    ) -> ArmRun:
        if scenario in SEQUENTIAL:
            return await self.run_sequential(
                scenario, SEQUENTIAL[scenario](), arm, repeat, max_tokens, salt
            )
        if scenario == "multiturn":
            return await self.run_multiturn(arm, repeat, max_tokens, salt)
        if scenario == "concurrent":
            return await self.run_concurrent(
                arm, repeat, max_tokens, salt, settings.sessions, settings.requests_per_session
            )
        raise ValueError(f"unknown scenario {scenario!r}")


def describe_isolation() -> str:
    return (
        "Arms ran one after another on the same server. Each arm used its own cache_salt "
        "(per scenario, arm, repeat and max_tokens), which vLLM mixes into the first block's "
        "hash, so no arm could reuse another arm's cached blocks; `no-reuse` used a unique "
        "salt per request. Every request decoded exactly max_tokens tokens (ignore_eos). One "
        "uncounted request under a unique salt warmed the engine up before the first arm."
    )


def as_dict(obj: Any) -> Any:
    """Dataclasses -> plain JSON-able structures (with derived figures)."""
    if isinstance(obj, ArmRun):
        return {
            "scenario": obj.scenario,
            "arm": obj.arm,
            "repeat": obj.repeat,
            "max_tokens": obj.max_tokens,
            "total_time": obj.total_time,
            "warmup_time": obj.warmup_time,
            "wall_time": obj.wall_time,
            "hit_rate": obj.hit_rate,
            "requests": [as_dict(r) for r in obj.requests],
        }
    if isinstance(obj, RequestResult):
        data = dict(obj.__dict__)
        data["hit_rate"] = obj.hit_rate
        data["reuse_reached"] = obj.reuse_reached
        return data
    return obj
