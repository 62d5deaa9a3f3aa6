"""Agent tiers: 22 agent types in 4 tiers, each mapped to the static layers it shares.

The map is data (``data/agents.yaml``), extendable from the config file.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from importlib import resources
from typing import Any

import yaml

from ..errors import ConfigError, PromptInputTypeError, UnknownAgentError, UnknownAgentWarning


class AgentTier(StrEnum):
    """The four tiers of the guide."""

    TIER_1_DEFAULT = "TIER_1_DEFAULT"
    TIER_2_ANALYSIS = "TIER_2_ANALYSIS"
    TIER_3_SPECIALIZED = "TIER_3_SPECIALIZED"
    TIER_4_ORCHESTRATOR = "TIER_4_ORCHESTRATOR"

    @property
    def number(self) -> int:
        return int(self.value.split("_")[1])


@dataclass(frozen=True)
class TierInfo:
    """One tier's static layers and its expected hit rate."""

    tier: AgentTier
    base_prompt: str
    tier_prompt: str | None
    expected_hit_rate: str
    agents: tuple[str, ...]
    measured_hit_rate: str | None = None

    @property
    def expected_range(self) -> tuple[float, float]:
        """``"90-95%"`` -> ``(0.90, 0.95)``."""
        return parse_hit_range(self.expected_hit_rate)


@dataclass(frozen=True)
class AgentProfile:
    """What one agent type's static prefix is built from."""

    agent_type: str
    tier: AgentTier
    base_prompt: str
    tier_prompt: str | None
    role_prompt: str | None
    known: bool = True


def normalize_agent_name(name: str) -> str:
    """Case, ``_`` vs ``-`` and surrounding spaces do not matter."""
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def parse_hit_range(text: str) -> tuple[float, float]:
    low, _, high = text.strip().rstrip("%").partition("-")
    try:
        lo = float(low) / 100
        hi = float(high or low) / 100
    except ValueError as exc:
        raise ConfigError(f"expected_hit_rate must look like '90-95%', got {text!r}") from exc
    return lo, hi


def _load_builtin() -> dict[str, Any]:
    text = resources.files("prefixcache.prompts").joinpath("data/agents.yaml").read_text("utf-8")
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


_TIER_KEYS = {"base_prompt", "tier_prompt", "expected_hit_rate", "measured_hit_rate", "agents"}

#: Distinct unknown agent names warned about (one warning each); past this, no more
#: warnings and no more memory.
MAX_WARNED_NAMES = 256


class AgentTierMap:
    """Agent type -> tier and static layers. Unknown agents fall back to tier 1."""

    def __init__(
        self,
        tiers: Mapping[str, Any] | None = None,
        *,
        extra: Mapping[str, Any] | None = None,
        strict: bool = False,
    ) -> None:
        self.strict = strict
        self._tiers: dict[AgentTier, TierInfo] = {}
        self._agents: dict[str, AgentProfile] = {}
        self._warned: set[str] = set()
        self._merge(tiers if tiers is not None else _load_builtin()["tiers"], replace=True)
        if extra:
            self._merge(extra, replace=False)

    # -- building ---------------------------------------------------------
    def _merge(self, tiers: Mapping[str, Any], *, replace: bool) -> None:
        for tier_name, spec in tiers.items():
            try:
                tier = AgentTier(str(tier_name).upper())
            except ValueError:
                raise ConfigError(
                    f"Unknown tier {tier_name!r} in agents.tiers; use one of "
                    f"{', '.join(t.value for t in AgentTier)}."
                ) from None
            spec = spec or {}
            where = f"agents.tiers.{tier_name}"
            if not isinstance(spec, Mapping):
                raise ConfigError(
                    f"{where} must be a mapping (base_prompt, tier_prompt, expected_hit_rate, "
                    f"agents), got {type(spec).__name__}."
                )
            unknown = sorted(set(map(str, spec)) - _TIER_KEYS)
            if unknown:
                raise ConfigError(
                    f"{where} has unknown key(s) {', '.join(unknown)}; known: "
                    f"{', '.join(sorted(_TIER_KEYS))}."
                )
            for key in ("base_prompt", "tier_prompt", "expected_hit_rate", "measured_hit_rate"):
                value = spec.get(key)
                if value is not None and not isinstance(value, str):
                    raise ConfigError(f"{where}.{key} must be a str, got {value!r}.")
            old = self._tiers.get(tier)
            if old is None and not replace:
                raise ConfigError(f"Tier {tier.value} has no built-in definition to extend.")
            base = spec.get("base_prompt", old.base_prompt if old else None)
            if not base:
                raise ConfigError(f"Tier {tier.value} needs a base_prompt.")
            tier_prompt = spec.get("tier_prompt", old.tier_prompt if old else None)
            expected = str(spec.get("expected_hit_rate", old.expected_hit_rate if old else ""))
            parse_hit_range(expected)
            agents_spec = spec.get("agents") or {}
            if isinstance(agents_spec, list):
                agents_spec = {name: None for name in agents_spec}
            if not isinstance(agents_spec, Mapping):
                raise ConfigError(f"agents of tier {tier.value} must be a list or a mapping.")
            names = list(old.agents) if old else []
            for raw_name, role in agents_spec.items():
                if not isinstance(raw_name, str) or not raw_name.strip():
                    raise ConfigError(
                        f"{where}.agents: agent names must be non-empty str, got {raw_name!r}."
                    )
                if role is not None and not isinstance(role, str):
                    raise ConfigError(
                        f"{where}.agents.{raw_name} must be a role prompt key (str) or null, "
                        f"got {role!r}."
                    )
                name = normalize_agent_name(raw_name)
                previous = self._agents.get(name)
                if previous is not None and previous.tier is not tier:
                    self._tiers[previous.tier] = _without(self._tiers[previous.tier], name)
                if name not in names:
                    names.append(name)
                self._agents[name] = AgentProfile(name, tier, base, tier_prompt, role)
            measured = spec.get("measured_hit_rate", old.measured_hit_rate if old else None)
            info = TierInfo(tier, base, tier_prompt, expected, tuple(names), measured)
            self._tiers[tier] = info
            for name in names:  # tier-wide changes reach agents defined earlier
                p = self._agents[name]
                self._agents[name] = AgentProfile(name, tier, base, tier_prompt, p.role_prompt)

    # -- queries ----------------------------------------------------------
    def profile(self, agent_type: str) -> AgentProfile:
        if not isinstance(agent_type, str):
            raise PromptInputTypeError(
                f"agent_type must be a str, got {type(agent_type).__name__}: {agent_type!r}"
            )
        name = normalize_agent_name(agent_type)
        found = self._agents.get(name)
        if found is not None:
            return found
        suggestions = difflib.get_close_matches(name, list(self._agents), n=3, cutoff=0.6)
        if self.strict:
            raise UnknownAgentError(agent_type, suggestions)
        if name not in self._warned and len(self._warned) < MAX_WARNED_NAMES:
            self._warned.add(name)
            hint = f" (did you mean {', '.join(suggestions)}?)" if suggestions else ""
            warnings.warn(
                f"Unknown agent type {agent_type!r}{hint}: using tier 1 "
                f"({self.tier_info(AgentTier.TIER_1_DEFAULT).base_prompt}) without a role "
                "block. Add it under agents.tiers in config/config.yaml.",
                UnknownAgentWarning,
                stacklevel=3,
            )
        t1 = self.tier_info(AgentTier.TIER_1_DEFAULT)
        return AgentProfile(name, t1.tier, t1.base_prompt, t1.tier_prompt, None, known=False)

    def prompt_keys(self) -> list[tuple[str, str]]:
        """``(where, key)`` of every prompt key the map refers to (for checking them)."""
        keys: list[tuple[str, str]] = []
        for info in self.tiers():
            keys.append((f"{info.tier.value}.base_prompt", info.base_prompt))
            if info.tier_prompt:
                keys.append((f"{info.tier.value}.tier_prompt", info.tier_prompt))
            for name in info.agents:
                role = self._agents[name].role_prompt
                if role:
                    keys.append((f"{info.tier.value}.agents.{name}", role))
        return keys

    def tier_info(self, tier: AgentTier) -> TierInfo:
        return self._tiers[tier]

    def tiers(self) -> list[TierInfo]:
        return [self._tiers[t] for t in AgentTier if t in self._tiers]

    def agents(self) -> list[str]:
        return [name for info in self.tiers() for name in info.agents]

    def get_agent_tier(self, agent_type: str) -> AgentTier:
        return self.profile(agent_type).tier

    def get_base_prompt_for_agent(self, agent_type: str) -> str:
        return self.profile(agent_type).base_prompt

    def get_cache_hit_expectation(self, agent_type: str) -> str:
        return self.tier_info(self.profile(agent_type).tier).expected_hit_rate

    def list_agents_by_tier(self, tier: AgentTier) -> list[str]:
        return list(self.tier_info(AgentTier(tier)).agents)

    def get_tier_statistics(self) -> dict[str, dict[str, Any]]:
        """Per tier: agents, base prompt, tier block, the guide's expected hit rate and the
        hit rate the live benchmark measured (see data/agents.yaml for the source).

        Each entry also answers to the keys of the guide's reference implementation
        (``count``, ``agents``, ``base_prompt``, ``cache_hit_rate`` as the expectation
        string), so code ported from it runs unchanged."""
        return {
            info.tier.value: {
                "count": len(info.agents),
                "cache_hit_rate": info.expected_hit_rate,
                "agent_count": len(info.agents),
                "agents": list(info.agents),
                "base_prompt": info.base_prompt,
                "tier_prompt": info.tier_prompt,
                "expected_hit_rate": info.expected_hit_rate,
                "measured_hit_rate": info.measured_hit_rate,
            }
            for info in self.tiers()
        }


def _without(info: TierInfo, name: str) -> TierInfo:
    agents = tuple(a for a in info.agents if a != name)
    return replace(info, agents=agents)
