"""The guide's chat endpoint and task execution, with sessions in the database.

A turn is never lost and never half-written: the user's turn is committed (``pending``)
before the LLM call; the reply is committed after it, and the user's turn marked
``complete``; a failed call marks the user's turn ``failed`` with the error; a stream
cut short (the client gone, the engine dead) keeps what was received as an
``incomplete`` assistant turn. Only ``complete`` exchanges go into later prompts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient

from ..errors import PrefixCacheError, PromptTooLongError
from ..llm.models import LLMResponse, Message, hit_rate
from ..prompts.inputs import PromptInputs
from ..prompts.tiers import normalize_agent_name
from .auth import Principal
from .db import (
    CacheRecord,
    ChatSession,
    Task,
    TaskStatus,
    TurnStatus,
    new_id,
    public_session_id,
    session_key,
    utcnow,
)
from .db import (
    Message as MessageRow,
)
from .errors import NotFound, PayloadTooLarge, Unprocessable, to_http
from .protocol import CacheFigures, ChatRequest, ChatResponse, TaskRequest, TaskResponse
from .state import ServiceState


def figures(response: LLMResponse) -> CacheFigures:
    return CacheFigures(
        prompt_tokens=response.prompt_tokens,
        cached_tokens=response.cached_tokens,
        hit_rate=response.cache_hit_rate,
        ttft=response.ttft,
        processing_time=response.processing_time,
        completion_tokens=response.usage["completion_tokens"],
    )


@dataclass
class Prepared:
    """A chat turn ready to send: the session, the messages, the agent, and the engine
    slot it holds (``release`` gives it back)."""

    session_key: str  # the stored id, scoped by user
    session_id: str  # the caller's id
    agent: str
    tier: str
    messages: list[Message]
    user_turn_id: int
    salt: str | None
    max_tokens: int
    release: Callable[[], None] = lambda: None
    #: a stream has begun (from then on, its own ``finally`` settles the turn)
    started: bool = False


class Conversations:
    def __init__(self, state: ServiceState) -> None:
        self.state = state
        self.service = state.settings.service

    # -- building blocks --------------------------------------------------------------
    def agent_for(self, requested: str | None) -> tuple[str, str]:
        """The (normalised agent name, tier) to use; 422 for an unknown one in strict mode."""
        name = normalize_agent_name(requested or self.service.default_agent)
        tiers = self.state.library.tiers
        if self.service.strict_agents and name not in tiers.agents():
            close = [a for a in tiers.agents() if a.split("-")[0] == name.split("-")[0]][:3]
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise Unprocessable(
                f"Unknown agent_type {requested!r}.{hint} Known agents: GET /agents, or add it "
                "under agents.tiers in the config."
            )
        return name, tiers.profile(name).tier.value

    def tools_for(
        self, principal: Principal, agent: str, requested: Sequence[str] | None
    ) -> list[str]:
        """The agent's tools (or the task's required tools), filtered by the key's
        permissions: the guide's ``get_user_tools(user_id)``."""
        wanted = (
            list(requested)
            if requested is not None
            else list(self.service.agent_tools.get(agent, self.service.default_tools))
        )
        if principal.tools is None:
            return wanted
        allowed = set(principal.tools)
        return [t for t in wanted if t in allowed]

    def check_size(self, text: str, what: str) -> None:
        limit = self.service.max_message_chars
        if len(text) > limit:
            raise PayloadTooLarge(
                f"{what} has {len(text)} characters; the limit is {limit} "
                "(service.max_message_chars). Shorten it or split the work."
            )

    async def check_context(
        self, messages: list[Message], max_tokens: int, prefix: str | None = None
    ) -> None:
        """413 before sending when prompt + max_tokens cannot fit the model's context.

        The bound: the static prefix's tokens (counted once per prefix with the server's
        /tokenize, then remembered) plus every other character (a token is at least one
        character). Only when that bound does not fit are the messages tokenized exactly."""
        limit = self.state.settings.llm.vllm.max_model_len
        chars = sum(len(str(m.get("content", ""))) for m in messages) + 16 * len(messages)
        if chars + max_tokens <= limit:
            return
        if prefix is not None:
            known = await self._tokens_of_prefix(prefix)
            if known + (chars - len(prefix)) + max_tokens <= limit:
                return
        tokens = await asyncio.to_thread(self._count, messages)
        if tokens + max_tokens > limit:
            raise PromptTooLongError(
                f"The prompt has {tokens} tokens and max_tokens is {max_tokens}: "
                f"{tokens + max_tokens} > the model's context of {limit} tokens. Start a new "
                "session, shorten the message, or ask for fewer tokens.",
                status=413,
                prompt_tokens=tokens,
                max_context=limit,
            )

    def _count(self, messages: list[Message]) -> int:
        from ..llm.inspector import EngineInspector

        cfg = self.state.settings.llm.vllm
        with EngineInspector(cfg.url, cfg.model_name(), cfg.api_key, timeout=30) as inspector:
            return len(inspector.tokenize_messages(messages))

    async def _tokens_of_prefix(self, prefix: str) -> int:
        cache = self.state.prefix_tokens
        if prefix not in cache:
            cache[prefix] = await asyncio.to_thread(
                self._count, [{"role": "system", "content": prefix}]
            )
        return cache[prefix]

    async def _ensure_session(
        self, db: AsyncSession, principal: Principal, key: str, agent: str
    ) -> ChatSession:
        """The caller's session ``key``, created if new; its agent set to ``agent``."""
        found = await db.get(ChatSession, key)
        if found is None:
            found = ChatSession(
                id=key, user_id=principal.user_id, tenant_id=principal.tenant, agent_type=agent
            )
            db.add(found)
        found.agent_type = agent
        found.updated_at = utcnow()
        return found

    async def _store(
        self, principal: Principal, key: str, agent: str, row: MessageRow | Task
    ) -> None:
        """Commit ``row`` with its session (created if new). Two first turns of one new
        session may race to create it: the loser retries and finds it."""
        for attempt in range(3):
            try:
                async with self.state.sessions() as db:
                    await self._ensure_session(db, principal, key, agent)
                    db.add(row)
                    await db.commit()
                    return
            except IntegrityError:
                if attempt == 2:
                    raise
                make_transient(row)
                if isinstance(row, MessageRow):
                    row.id = None  # type: ignore[assignment]

    async def _history(self, db: AsyncSession, session_key: str) -> list[MessageRow]:
        """Complete exchanges only, each question with its own answer: an assistant turn
        names the user turn it answers (``reply_to``), so turns sent in parallel replay
        in order, each with its reply. A failed or incomplete turn is kept, not replayed."""
        rows = await session_messages(db, session_key)
        replies = {
            r.reply_to: r
            for r in rows
            if r.role == "assistant" and r.status == TurnStatus.COMPLETE and r.reply_to is not None
        }
        pairs = [
            (r, replies[r.id])
            for r in rows
            if r.role == "user" and r.status == TurnStatus.COMPLETE and r.id in replies
        ]
        keep = pairs[-(self.service.history_max_messages // 2) :]
        return [m for pair in keep for m in pair]

    def _messages(
        self,
        principal: Principal,
        session_id: str,
        agent: str,
        request: ChatRequest,
        history: list[MessageRow],
        tools: list[str],
    ) -> list[Message]:
        library = self.state.library
        inputs = PromptInputs(
            session_id=session_id,
            user_name=principal.user,
            available_tools=tools,
            additional_params=request.additional_params,
        )
        if self.service.history_layout == "system":  # the guide's last exchanges in the prompt
            recent = (
                [f"{m.role}: {m.content}" for m in history[-2 * self.service.history_exchanges :]]
                if self.service.history_exchanges
                else []
            )
            inputs = inputs.replace(recent_context=recent or None)
            system = library.compose(inputs, agent_type=agent).text
            return [
                {"role": "system", "content": system},
                {"role": "user", "content": request.message},
            ]
        system = library.compose(inputs, agent_type=agent).text
        return [
            {"role": "system", "content": system},
            *({"role": m.role, "content": m.content} for m in history),
            {"role": "user", "content": request.message},
        ]

    async def record(
        self,
        principal: Principal,
        endpoint: str,
        agent: str,
        tier: str,
        response: LLMResponse,
        messages: Sequence[Message] | None = None,
        session_key: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        prompt = (
            json.dumps(list(messages), ensure_ascii=False)
            if (messages is not None and self.service.record_prompts)
            else None
        )
        self.state.add_record(
            CacheRecord(
                tenant_id=principal.tenant,
                user_id=principal.user_id,
                endpoint=endpoint,
                agent_type=agent,
                tier=tier,
                model=response.served_model,
                prompt_tokens=response.prompt_tokens,
                cached_tokens=response.cached_tokens,
                ttft=response.ttft,
                processing_time=response.processing_time,
                prompt=prompt,
                session_id=session_key,
                **(extra or {}),
            )
        )

    # -- /chat --------------------------------------------------------------------------
    async def prepare(self, principal: Principal, request: ChatRequest) -> Prepared:
        """Everything checked before anything is stored: a rejected request (too long,
        unknown agent, no engine slot) leaves no session and no turn behind. Then the
        user's turn is committed (``pending``) and the engine slot is held until
        ``prepared.release()``."""
        self.check_size(request.message, "message")
        self.next_agents(request.next_agent_types)  # 422 for an unknown one, before anything
        max_tokens = request.max_tokens or self.service.default_max_tokens
        public = request.session_id or new_id("s")
        key = session_key(principal.user_id, public)
        async with self.state.sessions() as db:
            session = await db.get(ChatSession, key)
            # a follow-up without agent_type keeps the session's agent
            agent, tier = self.agent_for(
                request.agent_type or (session.agent_type if session is not None else None)
            )
            tools = self.tools_for(principal, agent, None)
            history = await self._history(db, key) if session is not None else []
        messages = self._messages(principal, public, agent, request, history, tools)
        try:
            await self.check_context(messages, max_tokens, self._prefix_of(agent))
        except PromptTooLongError:
            raise  # rejected: nothing is stored
        except PrefixCacheError as exc:  # the engine could not count: the turn is kept, failed
            failed = MessageRow(
                session_id=key,
                role="user",
                content=request.message,
                status=TurnStatus.FAILED,
                error=_describe(exc),
            )
            await asyncio.shield(self._store(principal, key, agent, failed))
            raise
        release = await self.state.admission.acquire(principal.key_id, principal.tenant)
        try:
            turn = MessageRow(
                session_id=key,
                role="user",
                content=request.message,
                status=TurnStatus.PENDING,
                instance_id=self.state.instance_id,
            )
            await self._store(principal, key, agent, turn)  # kept before the LLM is asked
        except BaseException:
            release()
            raise
        return Prepared(
            key,
            public,
            agent,
            tier,
            messages,
            turn.id,
            self.state.salt_for(principal),
            max_tokens,
            release,
        )

    def next_agents(self, requested: Sequence[str] | None) -> list[str]:
        """The normalised agents of a next-agent hint (422 for an unknown one)."""
        return [self.agent_for(name)[0] for name in requested or ()]

    def prefetch(
        self, principal: Principal, agents: Sequence[str], session_key: str | None
    ) -> None:
        """Prefill the next agents' prefixes for this caller, after its answer."""
        if agents and self.state.warmer is not None:
            self.state.warmer.prefetch(principal, agents, session_key)

    def _prefix_of(self, agent: str) -> str:
        return self.state.library.compose_prompt(agent_type=agent).prefix

    async def _finish_turn(
        self,
        prepared: Prepared,
        *,
        user_status: TurnStatus,
        reply: str | None = None,
        reply_status: TurnStatus = TurnStatus.COMPLETE,
        response: LLMResponse | None = None,
        error: str | None = None,
    ) -> None:
        """Mark the user's turn and write the assistant's (if any), in one commit (one
        UPDATE, no read first). A session deleted meanwhile gets no reply row."""
        values: dict[str, Any] = {"status": user_status, "instance_id": None}
        if user_status is TurnStatus.FAILED:
            values["error"] = error
        if response is not None:
            values.update(
                prompt_tokens=response.prompt_tokens,
                cached_tokens=response.cached_tokens,
                ttft=response.ttft,
            )
        async with self.state.sessions() as db:
            marked = await db.execute(
                update(MessageRow).where(MessageRow.id == prepared.user_turn_id).values(**values)
            )
            if getattr(marked, "rowcount", 1) and reply is not None:
                db.add(
                    MessageRow(
                        session_id=prepared.session_key,
                        role="assistant",
                        content=reply,
                        status=reply_status,
                        reply_to=prepared.user_turn_id,
                        error=error if reply_status is not TurnStatus.COMPLETE else None,
                        prompt_tokens=response.prompt_tokens if response else None,
                        cached_tokens=response.cached_tokens if response else None,
                        ttft=response.ttft if response else None,
                    )
                )
            await db.commit()

    async def _completed(self, prepared: Prepared, response: LLMResponse) -> None:
        await self._finish_turn(
            prepared, user_status=TurnStatus.COMPLETE, reply=response.content, response=response
        )

    async def _failed(self, prepared: Prepared, exc: BaseException) -> None:
        await self._finish_turn(prepared, user_status=TurnStatus.FAILED, error=_describe(exc))

    async def _cut(self, prepared: Prepared, partial: str, error: str) -> None:
        """A stream that ended early: the reply so far, marked incomplete."""
        await self._finish_turn(
            prepared,
            user_status=TurnStatus.COMPLETE,
            reply=partial,
            reply_status=TurnStatus.INCOMPLETE,
            error=error,
        )

    async def chat(self, principal: Principal, request: ChatRequest) -> ChatResponse:
        prepared = await self.prepare(principal, request)
        try:
            response = await self.state.llm.chat_completion(
                prepared.messages,
                max_tokens=prepared.max_tokens,
                temperature=request.temperature,
                cache_salt=prepared.salt,
                agent_type=prepared.agent,
                session_id=prepared.session_key,
            )
        except BaseException as exc:
            await asyncio.shield(self._failed(prepared, exc))
            raise
        finally:
            prepared.release()
        await self._completed(prepared, response)
        await self.record(
            principal,
            "chat",
            prepared.agent,
            prepared.tier,
            response,
            prepared.messages,
            prepared.session_key,
        )
        self.prefetch(principal, self.next_agents(request.next_agent_types), prepared.session_key)
        return ChatResponse(
            reply=response.content,
            session_id=prepared.session_id,
            agent_type=prepared.agent,
            tier=prepared.tier,
            finish_reason=response.finish_reason,
            cache=figures(response),
        )

    async def chat_stream(
        self, principal: Principal, request: ChatRequest, prepared: Prepared
    ) -> AsyncIterator[str]:
        """Server-sent events: ``start``, ``token`` (deltas), then ``done`` with the cache
        figures, or ``error``. A client gone mid-stream leaves an ``incomplete`` turn."""
        parts: list[str] = []
        finished = False
        prepared.started = True
        yield _sse("start", {"session_id": prepared.session_id, "agent_type": prepared.agent})
        try:
            async for event in self.state.llm.stream_completion(
                prepared.messages,
                max_tokens=prepared.max_tokens,
                temperature=request.temperature,
                cache_salt=prepared.salt,
                agent_type=prepared.agent,
                session_id=prepared.session_key,
            ):
                if isinstance(event, LLMResponse):
                    finished = True
                    prepared.release()
                    await asyncio.shield(self._completed(prepared, event))
                    await self.record(
                        principal,
                        "chat",
                        prepared.agent,
                        prepared.tier,
                        event,
                        prepared.messages,
                        prepared.session_key,
                    )
                    self.prefetch(
                        principal,
                        self.next_agents(request.next_agent_types),
                        prepared.session_key,
                    )
                    yield _sse(
                        "done",
                        {
                            "session_id": prepared.session_id,
                            "finish_reason": event.finish_reason,
                            "cache": figures(event).model_dump(),
                        },
                    )
                else:
                    parts.append(event)
                    yield _sse("token", {"delta": event})
        except PrefixCacheError as exc:
            finished = True
            prepared.release()
            if parts:
                await self._cut(prepared, "".join(parts), _describe(exc))
            else:
                await self._failed(prepared, exc)
            status, code, _ = to_http(exc)
            yield _sse("error", {"status": status, "code": code, "message": str(exc)})
        finally:
            prepared.release()
            if not finished:  # the client went away (or the task was cancelled)
                await asyncio.shield(
                    self._cut(
                        prepared,
                        "".join(parts),
                        "the client disconnected before the reply was complete",
                    )
                )

    async def settle(self, prepared: Prepared) -> None:
        """After a streamed response, however it ended: the engine slot is given back,
        and a turn whose stream never began (the client left first) is marked failed."""
        prepared.release()
        if not prepared.started:
            await asyncio.shield(
                self._failed(prepared, ConnectionError("the client left before the reply began"))
            )

    # -- /tasks -----------------------------------------------------------------------
    async def run_task(self, principal: Principal, request: TaskRequest) -> TaskResponse:
        """The guide's ``execute_task``. Checked before anything is stored; the task is
        committed ``running`` before the LLM is asked, then ``completed`` or ``failed``."""
        self.check_size(request.description, "description")
        agent, tier = self.agent_for(request.agent_type)
        hinted = self.next_agents(request.next_agent_types)
        declared = self.next_agents(request.plan) if request.plan is not None else None
        tools = self.tools_for(principal, agent, request.required_tools)
        max_tokens = request.max_tokens or self.service.default_max_tokens
        previous: Task | None = None
        if request.previous_task_id is not None:
            async with self.state.sessions() as db:
                previous = await db.get(Task, request.previous_task_id)
            if previous is None or previous.user_id != principal.user_id:
                raise NotFound(f"No task {request.previous_task_id!r} for this API key.")
        if request.session_id is not None:
            key = session_key(principal.user_id, request.session_id)
        elif previous is not None:
            key = previous.session_id
        else:
            key = session_key(principal.user_id, new_id("s"))
        public = public_session_id(key)
        # the guide's execute_task: the previous result as recent context, priority and
        # deadline as additional parameters
        recent = f"Previous task: {previous.result}" if previous and previous.result else None
        inputs = PromptInputs(
            session_id=public,
            user_name=principal.user,
            available_tools=tools,
            recent_context=recent,
            additional_params={
                "task_priority": request.priority,
                "task_deadline": request.deadline,
            },
        )
        system = self.state.library.compose(inputs, agent_type=agent).text
        messages: list[Message] = [
            {"role": "system", "content": system},
            {"role": "user", "content": request.description},
        ]
        # the workflow's plan: declared here, or carried on from the previous task
        plan, step = declared, 0
        if plan is None and previous is not None and previous.plan is not None:
            plan, step = previous.plan, previous.step + 1

        def task_row(status: TaskStatus, error: str | None = None) -> Task:
            return Task(
                id=new_id("t"),
                user_id=principal.user_id,
                session_id=key,
                agent_type=agent,
                description=request.description,
                required_tools=request.required_tools,
                priority=request.priority,
                deadline=request.deadline,
                previous_task_id=request.previous_task_id,
                status=status,
                error=error,
                plan=plan,
                step=step,
                instance_id=self.state.instance_id if status is TaskStatus.RUNNING else None,
                finished_at=None if status is TaskStatus.RUNNING else utcnow(),
            )

        try:
            await self.check_context(messages, max_tokens, self._prefix_of(agent))
        except PromptTooLongError:
            raise  # rejected: nothing is stored
        except PrefixCacheError as exc:  # the engine could not count: the task is kept, failed
            await asyncio.shield(
                self._store(principal, key, agent, task_row(TaskStatus.FAILED, _describe(exc)))
            )
            raise
        async with self.state.admission.slot(principal.key_id, principal.tenant):
            task = task_row(TaskStatus.RUNNING)
            await self._store(principal, key, agent, task)
            try:
                response = await self.state.llm.chat_completion(
                    messages,
                    max_tokens=max_tokens,
                    cache_salt=self.state.salt_for(principal),
                    agent_type=agent,
                    session_id=key,
                )
            except BaseException as exc:
                await asyncio.shield(self._finish_task(task.id, None, _describe(exc)))
                raise
        await self._finish_task(task.id, response, None)
        await self.record(principal, "tasks", agent, tier, response, messages, key)
        upcoming = plan[step + 1 : step + 2] if plan is not None else []
        self.prefetch(principal, hinted or upcoming, key)
        return await self.get_task(principal, task.id)  # the same answer as GET /tasks/{id}

    async def _finish_task(
        self, task_id: str, response: LLMResponse | None, error: str | None
    ) -> None:
        async with self.state.sessions() as db:
            task = await db.get(Task, task_id)
            assert task is not None
            task.finished_at = utcnow()
            task.instance_id = None
            if response is None:
                task.status, task.error = TaskStatus.FAILED, error
            else:
                task.status, task.result = TaskStatus.COMPLETED, response.content
                task.prompt_tokens = response.prompt_tokens
                task.cached_tokens = response.cached_tokens
                task.ttft = response.ttft
                task.processing_time = response.processing_time
                task.completion_tokens = response.usage["completion_tokens"]
            await db.commit()

    async def get_task(self, principal: Principal, task_id: str) -> TaskResponse:
        async with self.state.sessions() as db:
            task = await db.get(Task, task_id)
            if task is None or task.user_id != principal.user_id:
                raise NotFound(f"No task {task_id!r} for this API key.")
            cache = None
            if task.prompt_tokens is not None:
                cache = CacheFigures(
                    prompt_tokens=task.prompt_tokens,
                    cached_tokens=task.cached_tokens,
                    hit_rate=hit_rate(task.cached_tokens, task.prompt_tokens),
                    ttft=task.ttft,
                    processing_time=task.processing_time,
                    completion_tokens=task.completion_tokens,
                )
            return TaskResponse(
                id=task.id,
                session_id=public_session_id(task.session_id),
                agent_type=task.agent_type,
                status=task.status,
                description=task.description,
                result=task.result,
                error=task.error,
                priority=task.priority,
                deadline=task.deadline,
                previous_task_id=task.previous_task_id,
                cache=cache,
                created_at=task.created_at,
                finished_at=task.finished_at,
            )


async def session_messages(db: AsyncSession, session_id: str) -> list[MessageRow]:
    """Every message of a session, in order (failed and incomplete turns included)."""
    query = select(MessageRow).where(MessageRow.session_id == session_id).order_by(MessageRow.id)
    return list((await db.execute(query)).scalars())


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "the request was cancelled (client gone or service stopping)"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:1000]
