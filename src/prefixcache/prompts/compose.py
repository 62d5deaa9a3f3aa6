"""Composition: a static, cache-stable prefix followed by a deterministic dynamic suffix.

See ``docs/design.md``. The prefix is rendered once per (base prompt, agent type) and
memoised; the suffix is rebuilt per call from normalised inputs, ordered from least to
most volatile, and always starts with the same header line.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from ..errors import PromptInputError, PromptInputTypeError
from .inputs import (
    NO_INPUTS,
    ClockGranularity,
    PromptInputs,
    format_clock,
    normalize_params,
    normalize_recent_context,
    normalize_tools,
    one_line,
)
from .registry import BUILTIN_PROMPT_DIR, PromptRegistry, key_to_relpath
from .tiers import AgentProfile, AgentTierMap

__all__ = ["ClockGranularity", "OptimizedPrompt", "PromptComposer", "StaticLayers"]

DYNAMIC_CONTEXT_KEY = "default.agent.system.dynamic_context"
#: Every suffix starts with exactly these bytes, so the join never re-tokenizes the prefix.
DYNAMIC_HEADER = "\n---\n\n## Dynamic Context\n\n"


@dataclass(frozen=True)
class StaticLayers:
    """The three static layers of one agent's prefix (empty strings where absent)."""

    base: str
    tier: str
    role: str

    def joined(self) -> str:
        parts = [p for p in (self.base, self.tier, self.role) if p]
        return "\n\n".join(parts) + "\n"


#: Block-alignment padding: an HTML comment of ``PAD_UNIT``s (each one token in the
#: usual BPE tokenizers), appended to a layer so that the layer ends on a KV block
#: boundary of the serving engine (see ``prefixcache.layout.alignment``).
PAD_OPEN = "<!-- "
PAD_UNIT = ". "
PAD_CLOSE = "-->"

#: A layer chain: (base key,), (base key, tier key) or (base key, tier key, role key).
LayerChain = tuple[str | None, ...]


def pad_text(units: int) -> str:
    """The padding appended to a layer: nothing for 0 units."""
    if units <= 0:
        return ""
    return "\n\n" + PAD_OPEN + PAD_UNIT * units + PAD_CLOSE


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


#: How many distinct prefixes a composer keeps (each is one rendered prompt, ~20 KB).
PREFIX_MEMO_SIZE = 256


class PromptComposer:
    """Builds ``OptimizedPrompt`` objects from a registry and a tier map.

    Prefixes are memoised by what they are made of (base key, tier block key, role block
    key), not by agent name: every unknown agent shares the one tier-1 prefix, and the
    memo holds at most ``PREFIX_MEMO_SIZE`` entries (least recently used dropped).
    """

    def __init__(self, registry: PromptRegistry, tiers: AgentTierMap) -> None:
        self.registry = registry
        self.tiers = tiers
        self._prefixes: OrderedDict[tuple[str, str | None, str | None], tuple[str, str]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()
        self._dynamic: jinja2.Template | None = None
        self._builtin_suffix = False
        self._padding: dict[LayerChain, int] = {}

    def set_padding(self, padding: Mapping[LayerChain, int]) -> None:
        """Pad layers to block boundaries: ``{(base,): n, (base, tier): m, ...}`` units
        (computed against a serving engine by ``prefixcache.layout.alignment``)."""
        with self._lock:
            self._padding = {tuple(k): int(v) for k, v in padding.items() if v > 0}
            self._prefixes.clear()

    @property
    def padding(self) -> dict[LayerChain, int]:
        return dict(self._padding)

    def reload(self) -> None:
        """Forget memoised prefixes and templates (after prompt files changed)."""
        with self._lock:
            self._prefixes.clear()
        self._dynamic = None
        self.registry = PromptRegistry(self.registry.directories, include_builtin=False)

    # -- static ------------------------------------------------------------
    def profile(self, agent_type: str | None) -> AgentProfile | None:
        # the tier map checks the type (PromptInputTypeError naming agent_type)
        return None if agent_type is None else self.tiers.profile(agent_type)

    def _layers_of(
        self, base_prompt_key: str, agent_type: str | None
    ) -> tuple[str, str | None, str | None]:
        profile = self.profile(agent_type)
        if profile is None:
            return (base_prompt_key, None, None)
        return (base_prompt_key, profile.tier_prompt, profile.role_prompt)

    def static_layers(self, base_prompt_key: str, agent_type: str | None = None) -> StaticLayers:
        """Render the layers of a prefix (not memoised; use ``prefix`` for that), each
        with its block-alignment padding if any was set."""
        base_key, tier_key, role_key = self._layers_of(base_prompt_key, agent_type)
        pads = self._padding
        base = self.registry.render(base_key).strip() + pad_text(pads.get((base_key,), 0))
        tier = role = ""
        if tier_key:
            tier = self.registry.render(tier_key).strip()
            tier += pad_text(pads.get((base_key, tier_key), 0))
        if role_key:
            role = self.registry.render(role_key).strip()
            role += pad_text(pads.get((base_key, tier_key, role_key), 0))
        return StaticLayers(base, tier, role)

    def layer_chains(self, agent_type: str) -> list[tuple[LayerChain, str]]:
        """The agent's layer chains, outermost first, each with the text that follows it
        in a prompt (the join before the next layer, or the suffix header)."""
        base_key, tier_key, role_key = self._layers_of(
            self.tiers.get_base_prompt_for_agent(agent_type), agent_type
        )
        chains: list[LayerChain] = [(base_key,)]
        if tier_key:
            chains.append((base_key, tier_key))
        if role_key:
            chains.append((base_key, tier_key, role_key))
        # the last layer is followed by the suffix header; its trailing newlines are left
        # out, since a chat template may trim them from a warm-up's (empty) suffix
        last = "\n" + DYNAMIC_HEADER.rstrip()
        return [(c, "\n\n" if i < len(chains) - 1 else last) for i, c in enumerate(chains)]

    def chain_text(self, chain: LayerChain) -> str:
        """The static text up to the end of ``chain`` (its padding included)."""
        texts = []
        for i, key in enumerate(chain):
            if key is None:
                continue
            texts.append(
                self.registry.render(key).strip() + pad_text(self._padding.get(chain[: i + 1], 0))
            )
        return "\n\n".join(texts)

    def prefix(self, base_prompt_key: str, agent_type: str | None = None) -> tuple[str, str]:
        """``(prefix, sha256 hex)``, rendered once and memoised (bounded, see the class)."""
        if not isinstance(base_prompt_key, str):
            raise PromptInputTypeError(
                f"base_prompt_key must be a str, got {type(base_prompt_key).__name__}"
            )
        cache_key = self._layers_of(base_prompt_key, agent_type)
        with self._lock:
            hit = self._prefixes.get(cache_key)
            if hit is not None:
                self._prefixes.move_to_end(cache_key)
                return hit
        text = self.static_layers(base_prompt_key, agent_type).joined()
        hit = (text, hashlib.sha256(text.encode("utf-8")).hexdigest())
        with self._lock:
            self._prefixes[cache_key] = hit
            while len(self._prefixes) > PREFIX_MEMO_SIZE:
                self._prefixes.popitem(last=False)
        return hit

    # -- dynamic -----------------------------------------------------------
    def suffix_variables(self, inputs: PromptInputs) -> dict[str, Any]:
        """The suffix template's variables, each validated and normalised.

        ``user_name``, ``user_role``, ``session_id``, ``tools`` (sorted list),
        ``params`` (sorted (key, value) pairs), ``recent_context`` (fenced text) and
        ``clock``; and, for templates written for the guide's reference implementation,
        ``available_tools`` (the same sorted list), ``additional_params`` (an ordered
        mapping of the same pairs), ``current_date`` and ``current_time`` (empty unless a
        ``clock`` is asked for)."""
        fields = _normalized(inputs)
        stamp = fields["clock"]
        return {
            **fields,
            "available_tools": fields["tools"],
            "additional_params": dict(fields["params"]),
            "current_date": stamp.split(" ")[0] if stamp else "",
            "current_time": " ".join(stamp.split(" ")[1:]) if stamp else "",
        }

    def suffix(self, inputs: PromptInputs = NO_INPUTS) -> str:
        """The dynamic suffix: the fixed header, then the suffix template's text."""
        if self._dynamic is None:
            template = self.registry.template(DYNAMIC_CONTEXT_KEY)
            self._builtin_suffix = (
                template.filename is not None and Path(template.filename) == BUILTIN_DYNAMIC_PATH
            )
            self._dynamic = template
        if self._builtin_suffix:
            return DYNAMIC_HEADER + builtin_suffix(_normalized(inputs))
        return DYNAMIC_HEADER + self.registry.render_template(
            self._dynamic, DYNAMIC_CONTEXT_KEY, self.suffix_variables(inputs)
        )

    def compose(
        self,
        inputs: PromptInputs = NO_INPUTS,
        *,
        agent_type: str | None = None,
        base_prompt_key: str | None = None,
    ) -> OptimizedPrompt:
        """The agent's (or the base prompt's) static prefix, then ``inputs`` as the suffix."""
        if base_prompt_key is None:
            if agent_type is None:
                raise PromptInputError(
                    "Give base_prompt_key, agent_type, or both (e.g. agent_type='code-reviewer')."
                )
            base_prompt_key = self.tiers.get_base_prompt_for_agent(agent_type)
        prefix, digest = self.prefix(base_prompt_key, agent_type)
        return OptimizedPrompt(prefix, self.suffix(inputs), digest, base_prompt_key, agent_type)


#: The built-in suffix template; while no prompt directory overrides it, the composer
#: renders it with ``builtin_suffix`` (same text, without a template engine per call).
BUILTIN_DYNAMIC_PATH = BUILTIN_PROMPT_DIR / key_to_relpath(DYNAMIC_CONTEXT_KEY)


def _normalized(inputs: PromptInputs) -> dict[str, Any]:
    """``inputs`` validated and normalised: the variables every suffix template gets."""
    if not isinstance(inputs, PromptInputs):
        raise PromptInputTypeError(
            f"inputs must be a PromptInputs, got {type(inputs).__name__}; build one with "
            "PromptInputs(session_id=..., user_name=..., ...)."
        )
    user_name, user_role, session_id = inputs.user_name, inputs.user_role, inputs.session_id
    return {
        "user_name": one_line(user_name, "user_name") if user_name is not None else "",
        "user_role": one_line(user_role, "user_role") if user_role is not None else "",
        "tools": normalize_tools(inputs.available_tools),
        "params": normalize_params(inputs.additional_params),
        "session_id": one_line(session_id, "session_id") if session_id is not None else "",
        "recent_context": normalize_recent_context(inputs.recent_context),
        "clock": format_clock(inputs.clock, inputs.now) if inputs.clock is not None else "",
    }


def builtin_suffix(fields: Mapping[str, Any]) -> str:
    """The built-in suffix template (``agent.system.dynamic_context.md``) in plain Python;
    a test renders both for many inputs and requires the same bytes."""
    out = []
    if fields["user_name"]:
        out.append(f"**User:** {fields['user_name']}\n")
    if fields["user_role"]:
        out.append(f"**User Role:** {fields['user_role']}\n")
    if fields["tools"]:
        out.append(f"**Available Tools:** {', '.join(fields['tools'])}\n")
    if fields["params"]:
        out.append("**Additional Parameters:**\n")
        out.extend(f"- {key}: {value}\n" for key, value in fields["params"])
    if fields["session_id"]:
        out.append(f"**Session:** {fields['session_id']}\n")
    if fields["recent_context"]:
        out.append(f"**Recent Context:**\n{fields['recent_context']}\n")
    if fields["clock"]:
        out.append(f"**Date:** {fields['clock']}\n")
    out.append("\n")
    return "".join(out)
