"""Composition: a static, cache-stable prefix followed by a deterministic dynamic suffix.

See ``docs/design.md``. The prefix is rendered once per (base prompt, agent type) and
memoised; the suffix is rebuilt per call from normalised inputs, ordered from least to
most volatile, and always starts with the same header line.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import jinja2

from .registry import PromptRegistry
from .tiers import AgentProfile, AgentTierMap

DYNAMIC_CONTEXT_KEY = "default.agent.system.dynamic_context"
#: Every suffix starts with exactly these bytes, so the join never re-tokenizes the prefix.
DYNAMIC_HEADER = "\n---\n\n## Dynamic Context\n\n"
#: Multi-line dynamic text (recent context) is fenced: each line gets this prefix, so no
#: dynamic line can start like one of the suffix's own labels or headers.
QUOTE_PREFIX = "> "

ClockGranularity = Literal["date", "hour", "minute", "second"]
_CLOCK_FORMATS: dict[str, str] = {
    "date": "%Y-%m-%d",
    "hour": "%Y-%m-%d %H:00 UTC",
    "minute": "%Y-%m-%d %H:%M UTC",
    "second": "%Y-%m-%d %H:%M:%S UTC",
}

RecentContext = str | Sequence[str | Mapping[str, Any]]


@dataclass(frozen=True)
class StaticLayers:
    """The three static layers of one agent's prefix (empty strings where absent)."""

    base: str
    tier: str
    role: str

    def joined(self) -> str:
        parts = [p for p in (self.base, self.tier, self.role) if p]
        return "\n\n".join(parts) + "\n"


@dataclass(frozen=True)
class OptimizedPrompt:
    """A composed prompt: ``text == prefix + suffix``."""

    prefix: str
    suffix: str
    prefix_hash: str
    base_prompt_key: str
    agent_type: str | None = None

    @property
    def text(self) -> str:
        return self.prefix + self.suffix

    def __str__(self) -> str:
        return self.text


#: Every character ``str.splitlines`` treats as a line boundary.
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]+")


def one_line(value: object) -> str:
    """A single-line field: line breaks become spaces, so it cannot start a new line."""
    text = value if isinstance(value, str) else _stable_str(value)
    return _LINE_BREAKS.sub(" ", text).strip()


def _stable_str(value: object) -> str:
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        if isinstance(value, set | frozenset):
            value = sorted(value, key=repr)
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return str(value)


def normalize_tools(tools: Iterable[object] | None) -> list[str]:
    """De-duplicated, sorted, single-line tool names; empty names dropped."""
    if not tools:
        return []
    if isinstance(tools, str):
        tools = [tools]
    return sorted({t for t in (one_line(x) for x in tools) if t})


def normalize_params(params: Mapping[Any, Any] | None) -> list[tuple[str, str]]:
    """Sorted ``(key, value)`` pairs; ``None`` values omitted."""
    if not params:
        return []
    pairs = {one_line(k): one_line(v) for k, v in params.items() if v is not None}
    return sorted((k, v) for k, v in pairs.items() if k)


def fence(text: str) -> str:
    """Quote every line of multi-line dynamic text (see ``QUOTE_PREFIX``)."""
    return "\n".join(QUOTE_PREFIX + line for line in text.splitlines())


def normalize_recent_context(context: RecentContext | None) -> str:
    if not context:
        return ""
    if isinstance(context, str):
        text = context
    else:
        lines = []
        for item in context:
            if isinstance(item, Mapping) and "content" in item:
                role = item.get("role")
                lines.append(f"{role}: {item['content']}" if role else str(item["content"]))
            else:
                lines.append(item if isinstance(item, str) else _stable_str(item))
        text = "\n".join(lines)
    text = text.strip("\r\n")
    return fence(text) if text.strip() else ""


def format_clock(granularity: ClockGranularity, now: datetime | None = None) -> str:
    if granularity not in _CLOCK_FORMATS:
        raise ValueError(f"clock must be one of {', '.join(_CLOCK_FORMATS)}, got {granularity!r}")
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime(_CLOCK_FORMATS[granularity])


class PromptComposer:
    """Builds ``OptimizedPrompt`` objects from a registry and a tier map."""

    def __init__(self, registry: PromptRegistry, tiers: AgentTierMap) -> None:
        self.registry = registry
        self.tiers = tiers
        self._prefixes: dict[tuple[str, str | None], tuple[str, str]] = {}
        self._dynamic: jinja2.Template | None = None

    def reload(self) -> None:
        """Forget memoised prefixes and templates (after prompt files changed)."""
        self._prefixes.clear()
        self._dynamic = None
        self.registry = PromptRegistry(self.registry.directories, include_builtin=False)

    # -- static ------------------------------------------------------------
    def profile(self, agent_type: str | None) -> AgentProfile | None:
        return self.tiers.profile(agent_type) if agent_type is not None else None

    def static_layers(self, base_prompt_key: str, agent_type: str | None = None) -> StaticLayers:
        """Render the layers of a prefix (not memoised; use ``prefix`` for that)."""
        profile = self.profile(agent_type)
        base = self.registry.render(base_prompt_key).strip()
        tier = role = ""
        if profile is not None:
            if profile.tier_prompt:
                tier = self.registry.render(profile.tier_prompt).strip()
            if profile.role_prompt:
                role = self.registry.render(profile.role_prompt).strip()
        return StaticLayers(base, tier, role)

    def prefix(self, base_prompt_key: str, agent_type: str | None = None) -> tuple[str, str]:
        """``(prefix, sha256 hex)``, rendered once and memoised."""
        name = None if agent_type is None else self.tiers.profile(agent_type).agent_type
        cache_key = (base_prompt_key, name)
        hit = self._prefixes.get(cache_key)
        if hit is None:
            text = self.static_layers(base_prompt_key, agent_type).joined()
            hit = (text, hashlib.sha256(text.encode("utf-8")).hexdigest())
            self._prefixes[cache_key] = hit
        return hit

    # -- dynamic -----------------------------------------------------------
    def suffix(
        self,
        *,
        session_id: str | None = None,
        user_name: str | None = None,
        user_role: str | None = None,
        available_tools: Iterable[str] | None = None,
        recent_context: RecentContext | None = None,
        additional_params: Mapping[str, Any] | None = None,
        clock: ClockGranularity | None = None,
        now: datetime | None = None,
    ) -> str:
        if self._dynamic is None:
            self._dynamic = self.registry.template(DYNAMIC_CONTEXT_KEY)
        body = self._dynamic.render(
            user_name=one_line(user_name) if user_name is not None else "",
            user_role=one_line(user_role) if user_role is not None else "",
            tools=normalize_tools(available_tools),
            params=normalize_params(additional_params),
            session_id=one_line(session_id) if session_id is not None else "",
            recent_context=normalize_recent_context(recent_context),
            clock=format_clock(clock, now) if clock else "",
        )
        return DYNAMIC_HEADER + body

    def compose(
        self,
        base_prompt_key: str | None = None,
        session_id: str | None = None,
        user_name: str | None = None,
        user_role: str | None = None,
        available_tools: Iterable[str] | None = None,
        recent_context: RecentContext | None = None,
        additional_params: Mapping[str, Any] | None = None,
        *,
        agent_type: str | None = None,
        clock: ClockGranularity | None = None,
        now: datetime | None = None,
    ) -> OptimizedPrompt:
        if base_prompt_key is None:
            if agent_type is None:
                raise ValueError("Give base_prompt_key, agent_type, or both.")
            base_prompt_key = self.tiers.get_base_prompt_for_agent(agent_type)
        prefix, digest = self.prefix(base_prompt_key, agent_type)
        suffix = self.suffix(
            session_id=session_id,
            user_name=user_name,
            user_role=user_role,
            available_tools=available_tools,
            recent_context=recent_context,
            additional_params=additional_params,
            clock=clock,
            now=now,
        )
        return OptimizedPrompt(prefix, suffix, digest, base_prompt_key, agent_type)
