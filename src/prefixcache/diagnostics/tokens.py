"""Token-exact cache analysis against a live server: real token counts through the
server's own tokenizer (chat template applied), the engine's block size, predicted cached
tokens, and two real requests to compare the prediction with what vLLM reports."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from ..errors import PrefixCacheError
from ..layout.cache_model import common_prefix_len, predicted_cached_tokens
from ..llm.inspector import EngineInspector
from ..llm.interface import LLMInterface
from ..llm.models import Message
from ..prompts.inputs import PromptInputs
from ..prompts.library import PromptLibrary
from ..prompts.sizes import TYPICAL_CALL
from ..settings import ClientSettings
from .chat_template import TemplateFinding, chat_template_preamble

#: A second call with different dynamic inputs (another user, session and context).
OTHER_CALL = PromptInputs(
    session_id="session-91c2",
    user_name="Bob",
    user_role="maintainer",
    available_tools=["file_read", "search_code"],
    recent_context="user: the nightly build failed on the docs step",
    additional_params={"project_name": "AutoBot", "tech_stack": "Python + FastAPI"},
)
TASK_A = "Add input validation to the signup form and write a test for it."
TASK_B = "Explain why the nightly build failed and propose a fix."


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
    a = library.compose(TYPICAL_CALL, agent_type=agent_type).text
    b = library.compose(OTHER_CALL, agent_type=agent_type).text
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
class AnalysisReport:
    """``prefixcache analyze``: per-agent token analyses on one server."""

    url: str
    model: str
    version: str | None
    block_size: int
    results: Sequence[TokenAnalysis]
    template: TemplateFinding

    def to_json(self) -> dict[str, Any]:
        """The report as JSON data (``prefixcache analyze --format json``)."""
        return {
            "url": self.url,
            "model": self.model,
            "vllm_version": self.version,
            "block_size": self.block_size,
            "chat_template": {
                "preamble": self.template.preamble,
                "problems": list(self.template.problems),
            },
            "agents": [
                {**asdict(r), "dynamic_tokens": r.dynamic_tokens, "matches": r.matches}
                for r in self.results
            ],
        }


def analyze_agents(
    library: PromptLibrary, config: ClientSettings, agents: Sequence[str], *, live: bool
) -> AnalysisReport:
    """Tokenize each agent's pair of requests on the server, predict what vLLM can reuse,
    and (``live``) send the pair for real to compare."""
    with EngineInspector(config.url, config.model_name(), config.api_key) as inspector:
        stats = inspector.cache_stats()
        block = stats.block_size
        if block is None:
            raise PrefixCacheError(
                f"{config.url}/metrics has no vllm:cache_config_info block_size; is it vLLM? "
                "(A router's /metrics is not an engine's: point --base-url at a replica.)"
            )
        template = chat_template_preamble(inspector)
        results = [analyze_tokens(library, inspector, a, block) for a in agents]
    if live:

        async def run() -> list[TokenAnalysis]:
            async with LLMInterface(config) as llm:
                return [await measure(llm, library, r) for r in results]

        results = asyncio.run(run())
    return AnalysisReport(config.url, config.model_name(), stats.version, block, results, template)
