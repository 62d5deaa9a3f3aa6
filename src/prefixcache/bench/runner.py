"""The live benchmark: real agent workflows on a real vLLM server, arms side by side.

Arms (see ``scenarios.py``): ``no-reuse`` (unique ``cache_salt`` per request), ``naive``
(dynamic context first), ``optimized`` (``compose_prompt``) and ``warmed`` (optimized,
each agent's static prefix prefilled once first); multi-turn adds ``guide-layout`` and
``append-only``.

Every arm runs under its own ``cache_salt`` (per scenario, arm, repeat and max_tokens),
so one arm's cached blocks can never help another. Sequential and multi-turn arms run
**interleaved**, step by step (the arms' order rotating from step to step), so that
background load on a shared machine falls on every arm alike; concurrent arms run one
after another. Requests decode exactly ``max_tokens`` tokens (``ignore_eos``).

A failed request is a result row (``success=False`` with its error), not an aborted run.
After ``abort_after`` consecutive failures to reach the server the run stops with
``BenchmarkAborted``; ``Benchmark.snapshot()`` then still returns every row collected.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace

import httpx

from ..errors import PrefixCacheError, ProviderTimeoutError, ProviderUnavailableError
from ..layout.alignment import align_to_blocks
from ..layout.cache_model import common_prefix_len, predicted_cached_tokens
from ..layout.warming import Prefetcher, warm_messages
from ..llm.inspector import EngineInspector
from ..llm.interface import LLMInterface
from ..llm.models import LLMResponse, Message
from ..prompts.inputs import PromptInputs
from ..prompts.library import PromptLibrary
from ..prompts.reference import reference_prompt
from ..prompts.tiers import AgentProfile
from ..traces.records import TraceRecord, TraceWriter
from .results import ArmRun, RequestResult
from .scenarios import (
    DEFAULT_ARMS,
    MULTITURN_TURNS,
    SCENARIOS,
    Arm,
    Kind,
    Layout,
    Scenario,
    Step,
    concurrent_steps,
)
from .service import REQUEST_TIMEOUT_S, ServiceClient, ServiceLauncher, ServiceReply

Send = Callable[[], Awaitable[ServiceReply]]


class BenchmarkAborted(PrefixCacheError):
    """The server stopped answering; the rows collected so far are kept."""


@dataclass(frozen=True)
class BenchSettings:
    scenarios: tuple[str, ...] = ("single",)
    arms: tuple[str, ...] = DEFAULT_ARMS
    repeat: int = 1
    max_tokens: int = 32
    sweep: tuple[int, ...] = ()
    sessions: int = 8
    requests_per_session: int = 3
    #: consecutive unreachable/timed-out requests after which the run stops
    abort_after: int = 3
    #: passes over each sequential scenario's tasks: pass 1 is cold, passes 2.. are the
    #: steady state (same agents, other users and sessions, prefixes already warm)
    passes: int = 1
    #: seconds between a step's answer and the arm's next step (an agent running tools)
    tool_time: float = 0.0
    #: at most this many steps of each sequential scenario (None: all: the guide's 10,
    #: 10 and 20); `--fit-minutes` sizes it from the engine's measured speed
    tasks: int | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def steps_for(self, scenario: Scenario) -> list[Step]:
        """A sequential scenario's steps, the first ``tasks`` of them when set."""
        assert scenario.steps is not None
        steps = scenario.steps()
        return steps if self.tasks is None else steps[: self.tasks]

    def scenario_objects(self) -> list[Scenario]:
        return [SCENARIOS[name] for name in self.scenarios]

    def token_counts(self, scenario: Scenario) -> list[int]:
        counts = [self.max_tokens]
        if scenario.name == "single":
            counts += [m for m in dict.fromkeys(self.sweep) if m != self.max_tokens]
        return counts

    def arms_for(self, scenario: Scenario) -> list[Arm]:
        return scenario.select_arms(self.arms)

    def planned_for(self, scenario: Scenario, arm: Arm) -> int:
        """Requests one arm run sends (warm-ups included): what the progress bar ticks."""
        if scenario.kind is Kind.SEQUENTIAL:
            return sequential_requests(self.steps_for(scenario), arm, self.passes)
        if scenario.kind is Kind.MULTITURN:
            return len(MULTITURN_TURNS)
        return concurrent_requests(concurrent_steps(self.sessions, self.requests_per_session), arm)

    def planned_requests(self) -> int:
        total = 0
        for scenario in self.scenario_objects():
            per_count = sum(self.planned_for(scenario, arm) for arm in self.arms_for(scenario))
            total += per_count * len(self.token_counts(scenario))
        return total * self.repeat


ProgressFn = Callable[[str], None]


def sequential_requests(steps: Sequence[Step], arm: Arm, passes: int) -> int:
    """Requests an arm sends over sequential ``steps``: every step each pass, plus one
    warm-up per agent (``warm``) and one prefetch per agent switch (``prefetch``)."""
    warm = len({s.agent_type for s in steps}) if arm.warm else 0
    prefetch = len(prefetch_plan(steps)) if arm.prefetch else 0
    return len(steps) * passes + warm + prefetch


def concurrent_requests(plan: Sequence[Sequence[Step]], arm: Arm) -> int:
    """Requests an arm sends over concurrent sessions, warm-ups included."""
    warm = len({steps[0].agent_type for steps in plan}) if arm.warm else 0
    return sum(len(steps) for steps in plan) + warm


def prefetch_plan(steps: Sequence[Step]) -> list[int]:
    """Indices (0-based) of the steps whose agent is prefetched during the step before:
    the first time an agent appears after step 1 (a prefix already used is cached)."""
    seen = {steps[0].agent_type} if steps else set()
    plan = []
    for i, step in enumerate(steps[1:], 1):
        if step.agent_type not in seen:
            plan.append(i)
            seen.add(step.agent_type)
    return plan


@dataclass(frozen=True)
class RequestSpec:
    """One request of an arm: what is sent (``messages``, or ``send`` through the
    service, which builds the prompt itself) and where its row goes."""

    messages: Sequence[Message]
    index: int
    agent: str
    max_tokens: int
    salt: str
    predict: bool  # tokenize first and predict the cached tokens from the lane's history
    warmup: bool = False
    session: int = 0
    pass_no: int = 1
    send: Send | None = None

    @classmethod
    def warm_up(
        cls, agent: str, salt: str, messages: Sequence[Message] = (), predict: bool = False
    ) -> RequestSpec:
        """A one-token prefill of the agent's static prefix (a warm-up or a prefetch)."""
        return cls(
            messages=messages,
            index=0,
            agent=agent,
            max_tokens=1,
            salt=salt,
            predict=predict,
            warmup=True,
        )

    @classmethod
    def through_service(
        cls,
        send: Send,
        *,
        index: int,
        agent: str,
        max_tokens: int,
        session: int = 0,
        pass_no: int = 1,
    ) -> RequestSpec:
        """A request of the service arm: the service builds the prompt and sets the salt."""
        return cls(
            messages=(),
            index=index,
            agent=agent,
            max_tokens=max_tokens,
            salt="",
            predict=False,
            session=session,
            pass_no=pass_no,
            send=send,
        )


@dataclass
class _Lane:
    """One arm's state while a scenario runs (arms interleaved)."""

    scenario: str
    arm: Arm
    repeat: int
    max_tokens: int
    salt: str
    planned: int
    library: PromptLibrary | None = None
    seen: list[list[int]] = field(default_factory=list)
    results: list[RequestResult] = field(default_factory=list)
    history: list[Message] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    prefetcher: Prefetcher | None = None
    stall: float = 0.0  # waited for this lane's prefetch, charged to its next request
    #: the ``service`` arm: its client, the warm-up at the service's start, the chain
    service: ServiceClient | None = None
    service_warmup: float = 0.0
    warmed_prefixes: int = 0
    tag: str = ""  # per service start: session ids never meet an earlier run's
    last_task: str | None = None

    def row(
        self,
        spec: RequestSpec,
        profile: AgentProfile,
        *,
        response: LLMResponse | None = None,
        error: str | None = None,
        elapsed: float = 0.0,
        predicted: int | None = None,
        stall: float = 0.0,
    ) -> RequestResult:
        """One result row: the response's figures, or a failed row with ``error``."""
        where = RequestResult(
            scenario=self.scenario,
            arm=self.arm.name,
            repeat=self.repeat,
            max_tokens=spec.max_tokens,
            index=spec.index,
            agent_type=profile.agent_type,
            tier=profile.tier.value,
            warmup=spec.warmup,
            prompt_tokens=0,
            cached_tokens=None,
            predicted_cached=None,
            completion_tokens=0,
            ttft=None,
            processing_time=elapsed,
            session=spec.session,
            success=response is not None,
            error=error,
            stall=stall,
            pass_no=spec.pass_no,
        )
        if response is None:
            return where
        return replace(
            where,
            prompt_tokens=response.prompt_tokens,
            cached_tokens=response.cached_tokens,
            predicted_cached=predicted,
            completion_tokens=response.usage["completion_tokens"],
            ttft=response.ttft,
            processing_time=response.processing_time,
        )

    def runs(self, wall_time: float | None = None) -> list[ArmRun]:
        """The cold pass (with warm-ups) and, if any, the steady-state passes."""
        wall = wall_time if wall_time is not None else time.perf_counter() - self.started
        cold = [r for r in self.results if r.pass_no == 1]
        steady = [r for r in self.results if r.pass_no > 1]
        out = [
            ArmRun(
                self.scenario,
                self.arm.name,
                self.repeat,
                self.max_tokens,
                tuple(cold),
                sum(r.processing_time for r in cold if r.warmup) + self.service_warmup,
                wall,
                self.planned - len(steady) if steady else self.planned,
                warmed_prefixes=self.warmed_prefixes,
            )
        ]
        if steady:
            out.append(
                ArmRun(
                    self.scenario,
                    self.arm.name,
                    self.repeat,
                    self.max_tokens,
                    tuple(steady),
                    0.0,
                    wall,
                    len(steady),
                    phase="steady",
                )
            )
        return out


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
        abort_after: int = 3,
        trace: TraceWriter | None = None,
        services: ServiceLauncher | None = None,
    ) -> None:
        self.llm = llm
        #: starts the ``service`` arm's ``prefixcache serve`` processes
        self.services = services
        #: every request sent (warm-ups and prefetches included) as a trace line
        self.trace = trace
        self.inspector = inspector
        self.library = library
        self.block_size = block_size
        self.abort_after = abort_after
        self._on_request = on_request or (lambda _msg: None)
        self._unreachable = 0
        self.runs: list[ArmRun] = []  # finished arm runs
        self._lanes: list[_Lane] = []  # arm runs in progress
        self._aligned: dict[str, PromptLibrary] = {}

    def snapshot(self) -> list[ArmRun]:
        """Every arm run so far, the one(s) in progress included (marked incomplete)."""
        return self.runs + [run for lane in self._lanes if lane.results for run in lane.runs()]

    def aligned_library(self, own_layer: str = "auto") -> PromptLibrary:
        """A library whose layers are padded to this engine's block boundaries."""
        if own_layer not in self._aligned:
            library = PromptLibrary(self.library.settings)
            align_to_blocks(
                library.composer,
                self.inspector,
                self.block_size,
                library.tiers.agents(),
                own_layer=own_layer,
            )
            self._aligned[own_layer] = library
        return self._aligned[own_layer]

    # -- prompt layouts -------------------------------------------------------------
    def library_for(self, arm: Arm) -> PromptLibrary:
        return self.aligned_library(arm.aligned) if arm.aligned else self.library

    def messages(self, arm: Arm, step: Step) -> list[Message]:
        if arm.layout is Layout.REFERENCE:
            system = reference_prompt(self.library, step.agent_type, step.prompt_inputs())
            return [{"role": "system", "content": system}, {"role": "user", "content": step.task}]
        library = self.library_for(arm)
        prompt = library.compose(step.prompt_inputs(), agent_type=step.agent_type)
        if arm.layout is Layout.DYNAMIC_FIRST:
            system = prompt.suffix.strip("\n") + "\n\n" + prompt.prefix
        else:
            system = prompt.text
        return [{"role": "system", "content": system}, {"role": "user", "content": step.task}]

    def warmup_messages(self, agent_type: str, arm: Arm | None = None) -> list[Message]:
        """The agent's static prefix (and the fixed suffix header), nothing dynamic."""
        library = self.library_for(arm) if arm is not None else self.library
        return warm_messages(library, agent_type)

    def multiturn_messages(self, arm: Arm, history: Sequence[Message], turn: str) -> list[Message]:
        inputs = PromptInputs(
            session_id="multiturn-1", user_name="Alice", available_tools=("file_read", "file_write")
        )
        if arm.layout is Layout.HISTORY_IN_SYSTEM:
            recent = [f"{m['role']}: {m['content']}" for m in history[-6:]]
            inputs = inputs.replace(recent_context=recent)
            system = self.library.compose(inputs, agent_type=MULTITURN_AGENT).text
            return [{"role": "system", "content": system}, {"role": "user", "content": turn}]
        system = self.library.compose(inputs, agent_type=MULTITURN_AGENT).text
        return [
            {"role": "system", "content": system},
            *history,
            {"role": "user", "content": turn},
        ]

    # -- the one request loop ---------------------------------------------------------
    async def _request(self, lane: _Lane, spec: RequestSpec) -> tuple[RequestResult, str]:
        """Send one request (``spec.send``: through the service instead of to the engine); a
        failure becomes a failed row. Returns the row and the reply."""
        stall, lane.stall = (0.0, lane.stall) if spec.warmup else (lane.stall, 0.0)
        profile = self.library.tiers.profile(spec.agent)
        predicted: int | None = 0 if lane.arm.unique_salt and not spec.warmup else None
        started = time.perf_counter()
        content = ""
        overhead: float | None = None
        try:
            tokens: list[int] | None = None
            if spec.send is not None:  # the service builds the prompt: nothing to predict
                reply = await spec.send()
                response, overhead = reply.response, reply.overhead
            else:
                if spec.predict:
                    tokens = await asyncio.to_thread(
                        self.inspector.tokenize_messages, spec.messages
                    )
                    shared = max((common_prefix_len(tokens, t) for t in lane.seen), default=0)
                    predicted = predicted_cached_tokens(len(tokens), shared, self.block_size)
                response = await self.llm.chat_completion(
                    spec.messages,
                    max_tokens=spec.max_tokens,
                    cache_salt=spec.salt,
                    agent_type=spec.agent,
                    ignore_eos=True,
                )
        except PrefixCacheError as exc:
            if isinstance(exc, ProviderUnavailableError | ProviderTimeoutError):
                self._unreachable += 1
            result = lane.row(
                spec,
                profile,
                error=f"{type(exc).__name__}: {str(exc).splitlines()[0]}",
                elapsed=time.perf_counter() - started,
                stall=stall,
            )
        else:
            self._unreachable = 0
            if tokens is not None:
                lane.seen.append(tokens)
            if self.trace is not None and spec.send is None:
                self._trace(lane, spec, response)
            content = response.content
            result = lane.row(spec, profile, response=response, predicted=predicted, stall=stall)
            result = replace(result, overhead=overhead)
        lane.results.append(result)
        label = "warm-up" if spec.warmup else f"#{spec.index}"
        status = "" if result.success else " FAILED"
        where = f"{lane.scenario} pass {spec.pass_no}" if spec.pass_no > 1 else lane.scenario
        self._on_request(f"{where} {lane.arm.name} {label} {spec.agent}{status}")
        if self._unreachable >= self.abort_after:
            raise BenchmarkAborted(
                f"{self._unreachable} requests in a row could not reach the server "
                f"({result.error}); the run stopped, and the results so far are kept."
            )
        return result, content

    def _trace(self, lane: _Lane, spec: RequestSpec, response: LLMResponse) -> None:
        assert self.trace is not None
        self.trace.write(
            TraceRecord.from_response(
                spec.messages,
                response,
                cache_salt=spec.salt,
                agent=spec.agent,
                session=f"{lane.scenario}/{lane.arm.name}/{lane.repeat}/{spec.session}",
                labels={
                    "scenario": lane.scenario,
                    "arm": lane.arm.name,
                    "pass": str(spec.pass_no),
                    "repeat": str(lane.repeat),
                    "warmup": "yes" if spec.warmup else "no",
                },
            )
        )

    async def _warm_up(self, lane: _Lane, agents: Sequence[str], predict: bool) -> None:
        """Prefill each distinct agent's static prefix once (max_tokens=1) under the lane's salt."""
        for agent in dict.fromkeys(agents):
            await self._request(
                lane,
                RequestSpec.warm_up(
                    agent, lane.salt, self.warmup_messages(agent, lane.arm), predict=predict
                ),
            )

    def _lanes_for(
        self,
        scenario: str,
        arms: Sequence[Arm],
        repeat: int,
        max_tokens: int,
        salt: str,
        planned: Callable[[Arm], int],
    ) -> list[_Lane]:
        lanes = [
            _Lane(scenario, arm, repeat, max_tokens, f"{salt}-{arm.name}", planned(arm))
            for arm in arms
        ]
        self._lanes = lanes
        return lanes

    def _finish(self, lanes: Sequence[_Lane]) -> list[ArmRun]:
        runs = [run for lane in lanes for run in lane.runs()]
        self.runs += runs
        self._lanes = []
        return runs

    @staticmethod
    def _rotation(lanes: Sequence[_Lane], step: int) -> list[_Lane]:
        k = step % len(lanes)
        return list(lanes[k:]) + list(lanes[:k])

    # -- scenarios --------------------------------------------------------------------
    async def run_sequential(
        self,
        scenario: str,
        steps: Sequence[Step],
        arms: Sequence[Arm],
        repeat: int,
        max_tokens: int,
        salt: str,
        *,
        passes: int = 1,
        tool_time: float = 0.0,
    ) -> list[ArmRun]:
        """All arms over the same steps, interleaved step by step; ``passes`` times.

        After each step an arm "runs its tools" for ``tool_time`` seconds; an arm with
        ``prefetch`` prefetches the next step's agent during that time, and any wait for
        the prefetch beyond it is charged to that arm's next request (``stall``)."""
        prefetch_at = set(prefetch_plan(steps))
        lanes = self._lanes_for(
            scenario,
            arms,
            repeat,
            max_tokens,
            salt,
            lambda a: sequential_requests(steps, a, passes),
        )
        for lane in lanes:
            lane.library = self.library_for(lane.arm)
            if lane.arm.prefetch:
                lane.prefetcher = Prefetcher(self.llm, lane.library, cache_salt=lane.salt)
        # Arms that reuse nothing (no-reuse, naive) run first, on their own: interleaved,
        # their uncacheable blocks push the other arms' prefixes out of the KV cache
        # (measured: a 2 GiB cache lost the orchestrator's prefix by workflow step 20).
        # The arms that reuse run interleaved after them.
        alone = [lane for lane in lanes if not lane.arm.reuses]
        together = [lane for lane in lanes if lane.arm.reuses]
        for group in [[lane] for lane in alone] + ([together] if together else []):
            async with self._service_for(group):  # started (and warmed) right before
                for lane in group:  # warm right before the arm runs (not before other arms)
                    if lane.arm.warm:
                        await self._warm_up(lane, [s.agent_type for s in steps], predict=True)
                for pass_no in range(1, passes + 1):
                    for i, base_step in enumerate(steps, 1):
                        step = base_step.for_pass(pass_no)
                        for lane in self._rotation(group, i - 1):
                            await self._sequential_step(lane, step, i, steps, max_tokens, pass_no)
                            following = i if pass_no == 1 and i in prefetch_at else None
                            await self._tool_time(lane, steps, following, tool_time)
        return self._finish(lanes)

    async def _sequential_step(
        self,
        lane: _Lane,
        step: Step,
        index: int,
        steps: Sequence[Step],
        max_tokens: int,
        pass_no: int,
    ) -> None:
        if lane.arm.via_service:
            send = self._service_step(lane, step, index, steps, max_tokens, pass_no=pass_no)
            await self._request(
                lane,
                RequestSpec.through_service(
                    send, index=index, agent=step.agent_type, max_tokens=max_tokens, pass_no=pass_no
                ),
            )
            return
        unique = lane.arm.unique_salt
        salt = f"{lane.salt}-p{pass_no}-{index}" if unique else lane.salt
        await self._request(
            lane,
            RequestSpec(
                messages=self.messages(lane.arm, step),
                index=index,
                agent=step.agent_type,
                max_tokens=max_tokens,
                salt=salt,
                predict=not unique,
                pass_no=pass_no,
            ),
        )

    # -- the service arm ------------------------------------------------------------------
    @asynccontextmanager
    async def _service_for(self, lanes: Sequence[_Lane]) -> AsyncIterator[None]:
        """A fresh ``prefixcache serve``, warmed up, for the lanes that go through it (none
        started when no lane does); stopped by PID when the lanes are done."""
        served = [lane for lane in lanes if lane.arm.via_service]
        if not served:
            yield
            return
        if self.services is None:
            raise BenchmarkAborted(
                "the service arm needs a service launcher (Benchmark(services=...)); "
                "`prefixcache bench` makes one"
            )
        async with AsyncExitStack() as stack:
            try:
                handle = await stack.enter_async_context(self.services.start())
            except PrefixCacheError as exc:
                raise BenchmarkAborted(f"the service arm could not start: {exc}") from exc
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S))
            for lane in served:
                lane.service = ServiceClient(handle, http)
                lane.service_warmup, lane.warmed_prefixes = handle.warmup_time, handle.warmed
                lane.tag, lane.last_task = f"b{self.services.starts}", None
            try:
                yield
            finally:
                for lane in served:
                    lane.service = None

    def _service_step(
        self,
        lane: _Lane,
        step: Step,
        index: int,
        steps: Sequence[Step],
        max_tokens: int,
        *,
        session_suffix: str = "",
        pass_no: int = 1,
    ) -> Send:
        """How a caller of the service sends this step: the workflow as a ``/tasks`` chain
        (the plan declared on its first task), everything else to ``/chat``."""
        client = lane.service
        assert client is not None
        if lane.scenario == "workflow":
            first = index == 1
            # one caller runs the whole chain (a task chains only to its own user's tasks)
            caller = steps[0].for_pass(pass_no).user_name

            async def task() -> ServiceReply:
                reply = await client.task(
                    caller,
                    description=step.task,
                    agent_type=step.agent_type,
                    max_tokens=max_tokens,
                    required_tools=step.tools,
                    priority=str(step.params.get("task_priority") or "") or None,
                    previous_task_id=None if first else lane.last_task,
                    session_id=f"{lane.tag}-{step.session_id}" if first else None,
                    plan=[s.agent_type for s in steps] if first else None,
                )
                lane.last_task = reply.task_id
                return reply

            return task
        # the direct arms' recent context, in the same place: the dynamic suffix
        params = dict(step.params)
        if step.recent_context:
            params["recent_context"] = step.recent_context
        session = f"{lane.tag}-{step.session_id}{session_suffix}"
        return lambda: client.chat(
            step.user_name,
            message=step.task,
            agent_type=step.agent_type,
            session_id=session,
            max_tokens=max_tokens,
            additional_params=params,
        )

    async def _tool_time(
        self, lane: _Lane, steps: Sequence[Step], following: int | None, tool_time: float
    ) -> None:
        """The pause after a step: the arm's prefetch (if any) runs during it; a prefetch
        that outlasts it makes the arm wait, and that wait is charged to the arm."""
        prefetcher = lane.prefetcher
        started = time.perf_counter()
        if prefetcher is not None and following is not None:
            prefetcher.prefetch([steps[following].agent_type])
        if tool_time > 0:
            await asyncio.sleep(tool_time)
        if prefetcher is not None and prefetcher.pending:
            waited = time.perf_counter()
            await prefetcher.drain()
            lane.stall += time.perf_counter() - max(waited, started + tool_time)
        if prefetcher is not None:
            self._record_prefetches(lane, prefetcher)

    def _record_prefetches(self, lane: _Lane, prefetcher: Prefetcher) -> None:
        """Finished prefetches become warm-up rows of the lane (and ticks)."""
        recorded = {r.agent_type for r in lane.results if r.warmup}
        for digest, response in prefetcher.done.items():
            agent = prefetcher.agent_of[digest]
            if agent in recorded:
                continue
            spec = RequestSpec.warm_up(agent, lane.salt)
            lane.results.append(
                lane.row(spec, self.library.tiers.profile(agent), response=response)
            )
            recorded.add(agent)
            # what the prefetch cached is part of what later requests can reuse
            lane.seen.append(
                self.inspector.tokenize_messages(warm_messages(prefetcher.library, agent))
            )
            self._on_request(f"{lane.scenario} {lane.arm.name} prefetch {agent}")
        for error in prefetcher.errors:
            self._on_request(f"{lane.scenario} {lane.arm.name} prefetch FAILED: {error}")
        prefetcher.errors.clear()

    async def run_multiturn(
        self,
        arms: Sequence[Arm],
        repeat: int,
        max_tokens: int,
        salt: str,
        turns: int | None = None,
    ) -> list[ArmRun]:
        """One conversation per arm, interleaved turn by turn (arms that reuse nothing on
        their own first); each arm keeps its history."""
        chosen = MULTITURN_TURNS[:turns]
        lanes = self._lanes_for("multiturn", arms, repeat, max_tokens, salt, lambda a: len(chosen))
        together = [lane for lane in lanes if lane.arm.reuses]
        groups = [[lane] for lane in lanes if not lane.arm.reuses] + (
            [together] if together else []
        )
        for group in groups:
            async with self._service_for(group):
                for i, turn in enumerate(chosen, 1):
                    for lane in self._rotation(group, i - 1):
                        await self._turn(lane, i, turn, max_tokens)
        return self._finish(lanes)

    async def _turn(self, lane: _Lane, index: int, turn: str, max_tokens: int) -> None:
        """One multi-turn turn; the service arm keeps its history in the service."""
        if lane.service is not None:
            client, session = lane.service, f"{lane.tag}-multiturn-1"
            _, reply = await self._request(
                lane,
                RequestSpec.through_service(
                    lambda: client.chat(
                        "Alice",
                        message=turn,
                        agent_type=MULTITURN_AGENT,
                        session_id=session,
                        max_tokens=max_tokens,
                    ),
                    index=index,
                    agent=MULTITURN_AGENT,
                    max_tokens=max_tokens,
                ),
            )
        else:
            unique = lane.arm.unique_salt
            _, reply = await self._request(
                lane,
                RequestSpec(
                    messages=self.multiturn_messages(lane.arm, lane.history, turn),
                    index=index,
                    agent=MULTITURN_AGENT,
                    max_tokens=max_tokens,
                    salt=f"{lane.salt}-{index}" if unique else lane.salt,
                    predict=not unique,
                ),
            )
        lane.history += [
            {"role": "user", "content": turn},
            {"role": "assistant", "content": reply},
        ]

    async def run_concurrent(
        self, arm: Arm, repeat: int, max_tokens: int, salt: str, sessions: int, per_session: int
    ) -> ArmRun:
        """``sessions`` conversations at once, each ``per_session`` requests in order."""
        plan = concurrent_steps(sessions, per_session)
        agents = [steps[0].agent_type for steps in plan]
        [lane] = self._lanes_for(
            "concurrent", [arm], repeat, max_tokens, salt, lambda a: concurrent_requests(plan, a)
        )
        if arm.warm:
            await self._warm_up(lane, agents, predict=False)

        async def session(number: int, steps: list[Step]) -> None:
            for i, step in enumerate(steps, 1):
                if arm.via_service:  # each request its own session, as the direct arms
                    send = self._service_step(
                        lane, step, i, steps, max_tokens, session_suffix=f"-{i}"
                    )
                    await self._request(
                        lane,
                        RequestSpec.through_service(
                            send,
                            index=i,
                            agent=step.agent_type,
                            max_tokens=max_tokens,
                            session=number,
                        ),
                    )
                    continue
                await self._request(
                    lane,
                    RequestSpec(
                        messages=self.messages(arm, step),
                        index=i,
                        agent=step.agent_type,
                        max_tokens=max_tokens,
                        salt=f"{lane.salt}-{number}-{i}" if arm.unique_salt else lane.salt,
                        predict=False,
                        session=number,
                    ),
                )

        async with self._service_for([lane]):
            started = time.perf_counter()
            await asyncio.gather(*(session(n, steps) for n, steps in enumerate(plan)))
            wall = time.perf_counter() - started
        [run] = lane.runs(wall_time=wall)
        self.runs.append(run)
        self._lanes = []
        return run

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
        for repeat in range(1, settings.repeat + 1):
            for scenario in settings.scenario_objects():
                arms = settings.arms_for(scenario)
                if not arms:
                    continue
                for max_tokens in settings.token_counts(scenario):
                    salt = f"bench-{settings.run_id}-{scenario.name}-r{repeat}-m{max_tokens}"
                    if scenario.kind is Kind.SEQUENTIAL:
                        steps = settings.steps_for(scenario)
                        await self.run_sequential(
                            scenario.name,
                            steps,
                            arms,
                            repeat,
                            max_tokens,
                            salt,
                            passes=settings.passes,
                            tool_time=settings.tool_time,
                        )
                    elif scenario.kind is Kind.MULTITURN:
                        await self.run_multiturn(arms, repeat, max_tokens, salt)
                    else:
                        for arm in arms:
                            await self.run_concurrent(
                                arm,
                                repeat,
                                max_tokens,
                                f"{salt}-{arm.name}",
                                settings.sessions,
                                settings.requests_per_session,
                            )
        return list(self.runs)


MULTITURN_AGENT = "frontend-engineer"


def describe_isolation() -> str:
    return (
        "Each arm used its own cache_salt (per scenario, arm, repeat and max_tokens), which "
        "vLLM mixes into the first block's hash, so no arm could reuse another arm's cached "
        "blocks; `no-reuse` used a unique salt per request. Sequential and multi-turn arms ran "
        "interleaved, step by step with the arms' order rotating, so background load fell on "
        "all arms alike; concurrent arms ran one after another. Every request decoded exactly "
        "max_tokens tokens (ignore_eos). One uncounted request under a unique salt warmed the "
        "engine up before the first arm."
    )
