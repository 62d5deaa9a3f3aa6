"""Token-exact cache analysis against a live server: real token counts through the
server's own tokenizer (chat template applied), the engine's block size, predicted cached
tokens, and two real requests to compare the prediction with what vLLM reports."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ._analysis import TYPICAL_CALL
from ._client import LLMInterface
from ._inspect import EngineInspector, common_prefix_len, predicted_cached_tokens
from ._library import PromptLibrary
from ._lint import check_line
from ._models import Message

#: A second call with different dynamic inputs (another user, session and context).
OTHER_CALL: dict[str, Any] = {
    "session_id": "session-91c2",
    "user_name": "Bob",
    "user_role": "maintainer",
    "available_tools": ["file_read", "search_code"],
    "recent_context": "user: the nightly build failed on the docs step",
    "additional_params": {"project_name": "AutoBot", "tech_stack": "Python + FastAPI"},
}
TASK_A = "Add input validation to the signup form and write a test for it."
TASK_B = "Explain why the nightly build failed and propose a fix."
SYSTEM_MARKER = "PREFIXCACHE-SYSTEM-MARKER"


@dataclass(frozen=True)
class TokenAnalysis:
    agent_type: str
    tier: str
    prompt_tokens: int  # of the warm request (B)
    shared_tokens: int  # leading tokens A and B have in common (static prefix + fixed join)
    block_size: int
    predicted_cold: int = 0
    predicted_warm: int = 0
    measured_cold: int | None = None
    measured_warm: int | None = None
    cold_ttft: float | None = None
    warm_ttft: float | None = None

    @property
    def dynamic_tokens(self) -> int:
        return self.prompt_tokens - self.shared_tokens

    @property
    def matches(self) -> bool | None:
        if self.measured_cold is None or self.measured_warm is None:
            return None
        return (
            self.measured_cold == self.predicted_cold and self.measured_warm == self.predicted_warm
        )


def agent_messages(library: PromptLibrary, agent_type: str) -> tuple[list[Message], list[Message]]:
    """The two chat requests (different dynamic inputs and tasks) used for one agent."""
    a = library.compose_prompt(agent_type=agent_type, **TYPICAL_CALL).text
    b = library.compose_prompt(agent_type=agent_type, **OTHER_CALL).text
    return (
        [{"role": "system", "content": a}, {"role": "user", "content": TASK_A}],
        [{"role": "system", "content": b}, {"role": "user", "content": TASK_B}],
    )


def analyze_tokens(
    library: PromptLibrary, inspector: EngineInspector, agent_type: str, block_size: int
) -> TokenAnalysis:
    first, second = agent_messages(library, agent_type)
    tokens_a = inspector.tokenize_messages(first)
    tokens_b = inspector.tokenize_messages(second)
    shared = common_prefix_len(tokens_a, tokens_b)
    profile = library.tiers.profile(agent_type)
    return TokenAnalysis(
        agent_type=profile.agent_type,
        tier=profile.tier.value,
        prompt_tokens=len(tokens_b),
        shared_tokens=shared,
        block_size=block_size,
        predicted_cold=0,
        predicted_warm=predicted_cached_tokens(len(tokens_b), shared, block_size),
    )


async def measure(
    llm: LLMInterface, library: PromptLibrary, analysis: TokenAnalysis, *, max_tokens: int = 4
) -> TokenAnalysis:
    """Send the pair for real under a fresh cache salt (so the first is honestly cold)."""
    first, second = agent_messages(library, analysis.agent_type)
    salt = f"analyze-{uuid.uuid4().hex}"
    cold = await llm.chat_completion(
        first, max_tokens=max_tokens, cache_salt=salt, agent_type=analysis.agent_type
    )
    warm = await llm.chat_completion(
        second, max_tokens=max_tokens, cache_salt=salt, agent_type=analysis.agent_type
    )
    return replace(
        analysis,
        measured_cold=cold.cached_tokens,
        measured_warm=warm.cached_tokens,
        cold_ttft=cold.ttft,
        warm_ttft=warm.ttft,
    )


@dataclass(frozen=True)
class TemplateFinding:
    preamble: str
    problems: Sequence[str]


def chat_template_preamble(inspector: EngineInspector) -> TemplateFinding:
    """What the chat template puts before the system prompt, and what in it is volatile."""
    tokens = inspector.tokenize_messages(
        [{"role": "system", "content": SYSTEM_MARKER}, {"role": "user", "content": "hi"}],
        add_generation_prompt=False,
    )
    preamble = inspector.detokenize(tokens).split(SYSTEM_MARKER, 1)[0]
    return TemplateFinding(preamble, volatile_text_problems(preamble))


def volatile_text_problems(text: str) -> list[str]:
    """Lint findings that make text change over time (dates, times, ids, "today")."""
    return [
        f"{rule}: {msg}"
        for line in text.splitlines()
        for rule, msg in check_line(line)
        if rule in {"date", "time", "volatile-phrase", "uuid", "hex-id"}
    ]


TEMPLATE_FIX = (
    "The chat template writes volatile text (a date) before the system prompt, so every "
    "day (or request) starts cold. Pin it: pass chat_template_kwargs with a fixed value "
    '(for Llama 3.x: {"date_string": "26 Jul 2024"}) in every request, or serve the model '
    "with --chat-template pointing at a template without the date."
)
