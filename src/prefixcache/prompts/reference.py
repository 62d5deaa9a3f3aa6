"""The guide's reference layout, rebuilt on this library's prompts, for comparison.

The guide's platform builds an agent's system prompt like this (each fact below is what
its code does; the benchmark's ``reference`` arm uses this builder):

- **Tier mapping.** Every tier 1-3 agent gets the same main prompt
  (``default.agent.system.main``) and no role text at all; the orchestrator (tier 4)
  gets its own prompt.
- **Dynamic section, in this order.** The session id first, then the date and the time
  to the second (taken from the clock at each call), the user (default "User"), the
  user's role (default "Standard User"), the tools comma-joined in the caller's order
  ("All standard tools" when none), the recent context as one plain string ("No recent
  context available" when none), then the additional parameters as ``- key: value`` in
  the caller's order.
- **Escaping.** The whole prompt is re-rendered at each call with HTML autoescaping on:
  ``<``, ``>``, ``&`` and quotes in dynamic values become HTML entities.
- **Join.** ``static + "\\n\\n" + dynamic``.

So the first token that differs between two consecutive requests is in the session id
line (or, within one session, the time line): everything before it, the whole main
prompt, is shared by every tier 1-3 agent.
"""

from __future__ import annotations

from datetime import UTC, datetime

from markupsafe import escape

from .inputs import NO_INPUTS, PromptInputs
from .library import PromptLibrary
from .tiers import AgentTier

REFERENCE_TOOLS_FALLBACK = "All standard tools"
REFERENCE_CONTEXT_FALLBACK = "No recent context available"


def _e(value: object) -> str:
    return str(escape(str(value)))


def reference_static(library: PromptLibrary, agent_type: str) -> str:
    """The reference layout's static part: one main prompt for tiers 1-3, no role."""
    profile = library.tiers.profile(agent_type)
    if profile.tier is AgentTier.TIER_4_ORCHESTRATOR:
        key = profile.base_prompt
    else:
        key = library.tiers.tier_info(AgentTier.TIER_1_DEFAULT).base_prompt
    return library.registry.render(key).strip()


def reference_dynamic(inputs: PromptInputs) -> str:
    """The reference layout's dynamic part (its ``clock`` is ignored: the reference always
    shows the date and the time to the second, from ``inputs.now`` or the clock)."""
    moment = (inputs.now or datetime.now(UTC)).astimezone(UTC)
    tools = list(inputs.available_tools or [])
    context = inputs.recent_context
    lines = [
        "## Current Session Context",
        "",
        f"- Session ID: {_e(inputs.session_id or '')}",
        f"- Date: {moment.strftime('%Y-%m-%d')}",
        f"- Time: {moment.strftime('%H:%M:%S')}",
        f"- User: {_e(inputs.user_name or 'User')}",
        f"- Role: {_e(inputs.user_role or 'Standard User')}",
        "",
        "**Available Tools:**",
        ", ".join(_e(t) for t in tools) if tools else REFERENCE_TOOLS_FALLBACK,
        "",
        "**Recent Context:**",
        _e(context) if context else REFERENCE_CONTEXT_FALLBACK,
        "",
        "**Additional Parameters:**",
    ]
    lines += [f"- {_e(k)}: {_e(v)}" for k, v in (inputs.additional_params or {}).items()]
    return "\n".join(lines) + "\n"


def reference_prompt(
    library: PromptLibrary, agent_type: str, inputs: PromptInputs = NO_INPUTS
) -> str:
    """The whole system prompt as the guide's reference implementation builds it."""
    return reference_static(library, agent_type) + "\n\n" + reference_dynamic(inputs)
