"""Typed request and response models of the service's API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Scalar = str | int | float | bool | None


#: session and task ids: the same rule as tenant and user names (``auth.NAME_PATTERN``)
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def _valid_unicode(value: Any, where: str = "body") -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                f"{where} has a lone surrogate escape (\\ud800-\\udfff without its pair): "
                "send valid Unicode text"
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _valid_unicode(key, where)
            _valid_unicode(item, f"{key}")
    elif isinstance(value, list):
        for item in value:
            _valid_unicode(item, where)


class _Strict(BaseModel):
    """A request body: unknown fields are errors, and types are strict (``"yes"`` is
    not a boolean, ``"3"`` not a number)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _unicode(cls, data: Any) -> Any:
        _valid_unicode(data)
        return data


class CacheFigures(BaseModel):
    """The cache figures of one LLM request, as the server measured them."""

    prompt_tokens: int
    cached_tokens: int | None
    hit_rate: float | None
    ttft: float | None
    #: the engine request's whole time as the service measured it (the service's own
    #: time is the client's time minus this)
    processing_time: float | None = None
    completion_tokens: int | None = None


class ChatRequest(_Strict):
    """``POST /chat``: the guide's ChatRequest. The user and tenant come from the API key."""

    message: str = Field(min_length=1)
    #: the agent of this turn; empty: the session's agent (a new session: the default)
    agent_type: str | None = Field(default=None, max_length=64)
    session_id: str | None = Field(default=None, pattern=ID_PATTERN)
    additional_params: dict[str, Scalar] | None = None
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    temperature: float = Field(default=0.0, ge=0, le=2)
    #: the agents that come next: their prefixes are prefilled while the caller works
    next_agent_types: list[str] | None = Field(default=None, max_length=8)


class ChatResponse(BaseModel):
    reply: str
    session_id: str
    agent_type: str
    tier: str
    finish_reason: str | None
    cache: CacheFigures


class TaskRequest(_Strict):
    """``POST /tasks``: the guide's ``execute_task(task, session_id)``."""

    agent_type: str = Field(max_length=64)
    description: str = Field(min_length=1)
    required_tools: list[str] | None = None
    priority: str | None = Field(default=None, max_length=32)
    deadline: str | None = Field(default=None, max_length=64)
    previous_task_id: str | None = Field(default=None, pattern=ID_PATTERN)
    session_id: str | None = Field(default=None, pattern=ID_PATTERN)
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    #: the agents that come next (prefilled while the caller works)
    next_agent_types: list[str] | None = Field(default=None, max_length=8)
    #: the workflow's agents in order, declared on its first task: each chained task
    #: (previous_task_id) then prefetches the next step's agent by itself
    plan: list[str] | None = Field(default=None, max_length=64)


class TaskResponse(BaseModel):
    id: str
    session_id: str
    agent_type: str
    status: str
    description: str
    result: str | None
    error: str | None
    priority: str | None
    deadline: str | None
    previous_task_id: str | None
    cache: CacheFigures | None
    created_at: datetime
    finished_at: datetime | None


class MessageOut(BaseModel):
    role: str
    content: str
    status: str
    error: str | None = None
    created_at: datetime
    cache: CacheFigures | None = None


class SessionSummary(BaseModel):
    id: str
    agent_type: str
    messages: int
    created_at: datetime
    updated_at: datetime


class SessionDetail(SessionSummary):
    history: list[MessageOut]


class GroupStats(BaseModel):
    key: str
    requests: int
    prompt_tokens: int
    cached_tokens: int | None
    hit_rate: float | None
    ttft_p50: float | None
    ttft_p95: float | None
    expected_hit_rate: str | None = None
    versus_expected: str = "n/a"


class FamilyStats(BaseModel):
    """The stabilizer's view of one request family of the gateway (``docs/stabilize.md``)."""

    family: str
    requests: int
    #: requests sent rewritten (mode ``on``)
    rewritten: int
    #: measured: cached / prompt tokens of what was sent
    hit_rate: float | None
    #: predicted (block-exact, the engine's tokenizer) for the prompts as written...
    predicted_hit_rate: float | None
    #: ... and as stabilized: what ``on`` would measure
    stabilized_hit_rate: float | None
    #: the shapes of the lines that move (numbers and ids masked; never other text)
    moves: list[str]


class StatsResponse(BaseModel):
    tenant: str
    requests: int
    hit_rate: float | None
    by_agent: list[GroupStats]
    by_tier: list[GroupStats]
    #: gateway request families seen by the stabilizer (shadow or on)
    families: list[FamilyStats] = Field(default_factory=list)


class ReadyResponse(BaseModel):
    """Readiness. Without an admin key the engine's URL and the raw error are left out."""

    ready: bool
    vllm_url: str | None = None
    prefix_caching: bool | None = None
    block_size: int | None = None
    problem: str | None = None
    #: the warm-up: "warming 12/22", "warm 22/22", "waiting for the engine", "off"
    warming: str | None = None
    #: set when vLLM was too busy to answer /metrics in time: how old the facts shown are
    checked_s_ago: float | None = None


class ErrorResponse(BaseModel):
    error: dict[str, Any]


Role = Literal["system", "developer", "user", "assistant", "tool"]
