"""Typed request and response models of the service's API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Scalar = str | int | float | bool | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CacheFigures(BaseModel):
    """The cache figures of one LLM request, as the server measured them."""

    prompt_tokens: int
    cached_tokens: int | None
    hit_rate: float | None
    ttft: float | None
    processing_time: float | None = None


class ChatRequest(_Strict):
    """``POST /chat``: the guide's ChatRequest. The user and tenant come from the API key."""

    message: str = Field(min_length=1)
    agent_type: str | None = None
    session_id: str | None = Field(default=None, max_length=64)
    additional_params: dict[str, Scalar] | None = None
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    temperature: float = Field(default=0.0, ge=0, le=2)


class ChatResponse(BaseModel):
    reply: str
    session_id: str
    agent_type: str
    tier: str
    finish_reason: str | None
    cache: CacheFigures


class TaskRequest(_Strict):
    """``POST /tasks``: the guide's ``execute_task(task, session_id)``."""

    agent_type: str
    description: str = Field(min_length=1)
    required_tools: list[str] | None = None
    priority: str | None = Field(default=None, max_length=32)
    deadline: str | None = Field(default=None, max_length=64)
    previous_task_id: str | None = Field(default=None, max_length=64)
    session_id: str | None = Field(default=None, max_length=64)
    max_tokens: int | None = Field(default=None, ge=1, le=32768)


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


class StatsResponse(BaseModel):
    tenant: str
    requests: int
    hit_rate: float | None
    by_agent: list[GroupStats]
    by_tier: list[GroupStats]


class ReadyResponse(BaseModel):
    ready: bool
    vllm_url: str
    prefix_caching: bool | None = None
    block_size: int | None = None
    problem: str | None = None


class ErrorResponse(BaseModel):
    error: dict[str, Any]


Role = Literal["system", "user", "assistant"]
