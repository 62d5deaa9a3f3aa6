"""Prefix caching measured on the real embedded vLLM engine."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from prefixcache import PromptLibrary
from prefixcache.diagnostics.tokens import OTHER_CALL
from prefixcache.engine.local import LocalEngine, free_port
from prefixcache.errors import (
    PromptTooLongError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from prefixcache.layout.cache_model import common_prefix_len, predicted_cached_tokens
from prefixcache.llm.inspector import EngineInspector
from prefixcache.llm.interface import LLMInterface
from prefixcache.llm.metrics import CacheMetricsRecorder
from prefixcache.llm.models import LLMRequest, LLMResponse, Message
from prefixcache.prompts.inputs import PromptInputs
from prefixcache.prompts.sizes import TYPICAL_CALL
from prefixcache.settings import VLLMConfig

pytestmark = pytest.mark.integration


def chat(config: VLLMConfig, messages: Sequence[Message], **kwargs: Any) -> LLMResponse:
    async def go() -> LLMResponse:
        async with LLMInterface(config) as llm:
            return await llm.chat_completion(
                messages, max_tokens=kwargs.pop("max_tokens", 4), **kwargs
            )

    return asyncio.run(go())


def engine_cfg(engine: LocalEngine) -> VLLMConfig:
    return engine.config


def tokens(engine: LocalEngine, messages: Sequence[Message]) -> list[int]:
    with EngineInspector(engine.base_url, engine.model) as inspector:
        return inspector.tokenize_messages(messages)


def system_user(system: str, user: str) -> list[Message]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def salt() -> str:
    return uuid.uuid4().hex


def test_repeated_optimized_prompt_gets_exactly_the_predicted_cached_tokens(
    engine: LocalEngine, guide_library: PromptLibrary, block_size: int
) -> None:
    """The one live test on the guide's real prompts (about 4,300 tokens)."""
    text = guide_library.compose(TYPICAL_CALL, agent_type="frontend-engineer").text
    messages = system_user(text, "Add a loading spinner to the dashboard.")
    prompt_tokens = len(tokens(engine, messages))
    s = salt()
    cold = chat(engine.config, messages, cache_salt=s)
    warm = chat(engine.config, messages, cache_salt=s)
    assert cold.prompt_tokens == warm.prompt_tokens == prompt_tokens
    assert cold.cached_tokens == 0
    assert warm.cached_tokens == predicted_cached_tokens(prompt_tokens, prompt_tokens, block_size)
    assert warm.cached_tokens is not None and warm.cached_tokens >= prompt_tokens - block_size
    assert warm.metadata.get("cached_tokens") == warm.cached_tokens  # the guide's access pattern
    assert warm.usage.get("prompt_tokens") == prompt_tokens
    assert warm.cache_hit_rate == pytest.approx(warm.cached_tokens / prompt_tokens)
    assert warm.ttft is not None and 0 < warm.ttft <= warm.processing_time
    assert warm.metadata["provider"] == "vllm" and warm.metadata["request_id"]


def test_different_dynamic_suffixes_still_share_the_prefix(
    engine: LocalEngine, live_library: PromptLibrary, block_size: int
) -> None:
    first = system_user(
        live_library.compose(TYPICAL_CALL, agent_type="code-reviewer").text,
        "Review the login change.",
    )
    second = system_user(
        live_library.compose(OTHER_CALL, agent_type="code-reviewer").text,
        "Review the build script.",
    )
    a, b = tokens(engine, first), tokens(engine, second)
    shared = common_prefix_len(a, b)
    prefix_only = live_library.compose_prompt(agent_type="code-reviewer").prefix
    assert shared >= len(tokens(engine, system_user(prefix_only, "x"))) - 8  # whole static part
    s = salt()
    chat(engine.config, first, cache_salt=s)
    warm = chat(engine.config, second, cache_salt=s)
    expected = predicted_cached_tokens(len(b), shared, block_size)
    assert expected > 0.9 * len(b)
    assert warm.cached_tokens == expected


def test_naive_layout_dynamic_first_gets_no_reuse(
    engine: LocalEngine, live_library: PromptLibrary, block_size: int
) -> None:
    static = live_library.compose_prompt(agent_type="frontend-engineer").prefix

    def naive(call: PromptInputs) -> str:
        dynamic = live_library.compose(call, agent_type="frontend-engineer").suffix
        return dynamic + "\n" + static  # the common layout: context first, then the big prompt

    first = system_user(naive(TYPICAL_CALL), "Fix the header.")
    second = system_user(naive(OTHER_CALL), "Fix the footer.")
    shared = common_prefix_len(tokens(engine, first), tokens(engine, second))
    assert predicted_cached_tokens(len(tokens(engine, second)), shared, block_size) == 0
    s = salt()
    chat(engine.config, first, cache_salt=s)
    warm = chat(engine.config, second, cache_salt=s)
    assert warm.cached_tokens == 0
    assert warm.prompt_tokens > 500


def test_unique_cache_salt_gets_no_reuse(engine: LocalEngine, live_library: PromptLibrary) -> None:
    messages = system_user(
        live_library.compose_prompt(agent_type="testing-engineer").text, "Write a test."
    )
    first = chat(engine.config, messages, cache_salt=salt())
    second = chat(engine.config, messages, cache_salt=salt())
    assert first.cached_tokens == 0 and second.cached_tokens == 0


def test_request_object_form_and_recorder(engine: LocalEngine, live_library: PromptLibrary) -> None:
    recorder = CacheMetricsRecorder(live_library.tiers)
    text = live_library.compose_prompt(agent_type="orchestrator").text
    s = salt()

    async def go() -> list[LLMResponse]:
        async with LLMInterface(engine.config, recorder=recorder) as llm:
            out = []
            for task in ("Plan a release.", "Plan a rollback."):
                request = LLMRequest(
                    messages=system_user(text, task),
                    max_tokens=2,
                    cache_salt=s,
                    agent_type="orchestrator",
                )
                out.append(await llm.chat_completion(request))
            return out

    cold, warm = asyncio.run(go())
    [agent] = recorder.by_agent()
    assert agent.key == "orchestrator" and agent.requests == 2
    assert agent.cached_tokens == (cold.cached_tokens or 0) + (warm.cached_tokens or 0)
    assert warm.cached_tokens and warm.cached_tokens > 0
    [tier] = recorder.by_tier()
    assert tier.key == "TIER_4_ORCHESTRATOR" and tier.expected_range == (0.5, 0.7)
    exposition = recorder.exposition().decode()
    assert (
        'prefixcache_cached_tokens_total{agent_type="orchestrator",tier="TIER_4_ORCHESTRATOR"}'
        in exposition
    )
    assert "prefixcache_ttft_seconds_bucket" in exposition


def test_engine_metrics_count_the_hits(engine: LocalEngine, live_library: PromptLibrary) -> None:
    with EngineInspector(engine.base_url, engine.model) as inspector:
        before = inspector.cache_stats()
        messages = system_user(
            live_library.compose_prompt(agent_type="devops-engineer").text, "Ship it."
        )
        s = salt()
        chat(engine.config, messages, cache_salt=s)
        warm = chat(engine.config, messages, cache_salt=s)
        after = inspector.cache_stats()
    assert before.prefix_caching_enabled is True and before.block_size == 128
    assert after.hits - before.hits == warm.cached_tokens
    assert after.queries - before.queries >= 2 * warm.prompt_tokens - 2


def test_server_down_raises_provider_unavailable() -> None:
    config = VLLMConfig(port=free_port(), max_retries=1, retry_backoff_s=0.01)
    with pytest.raises(ProviderUnavailableError) as info:
        chat(config, [{"role": "user", "content": "hi"}])
    assert f"127.0.0.1:{config.port}" in str(info.value)
    assert "prefixcache engine start" in str(info.value)


def test_too_long_prompt_raises_prompt_too_long(engine: LocalEngine) -> None:
    with pytest.raises(PromptTooLongError) as info:
        chat(engine.config, [{"role": "user", "content": "word " * 9000}])
    assert info.value.max_context == 8192
    assert info.value.prompt_tokens is not None and info.value.prompt_tokens > 8192
    assert "max_model_len" in str(info.value)


def test_timeout_raises_provider_timeout(engine: LocalEngine, live_library: PromptLibrary) -> None:
    text = live_library.compose_prompt(agent_type="prd-writer").text
    config = engine.config.with_overrides(request_timeout_s=0.05)
    with pytest.raises(ProviderTimeoutError, match="request_timeout_s"):
        chat(config, system_user(text, "Write the PRD."), cache_salt=salt())  # a cold 4k prefill
