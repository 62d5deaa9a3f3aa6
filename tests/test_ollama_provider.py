"""The ``ollama`` provider, against OllamaStandInServer (a stand-in: Ollama cannot run here)."""

from __future__ import annotations

import asyncio

import pytest

from prefixcache.errors import ProviderRequestError
from prefixcache.llm.interface import LLMInterface
from prefixcache.llm.models import LLMResponse

from .ollama_standin import OllamaStandInServer


def test_ollama_chat_reports_tokens_and_no_cached_tokens() -> None:
    with OllamaStandInServer() as standin:

        async def go() -> LLMResponse:
            llm = LLMInterface(ollama_url=standin.url)
            return await llm.chat_completion(
                [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "one two three"},
                ],
                provider="ollama",
                max_tokens=2,
            )

        response = asyncio.run(go())
    assert response.content == "one two "
    assert response.usage == {
        "prompt_tokens": 5,
        "completion_tokens": 2,
        "total_tokens": 7,
        "cached_tokens": None,
    }
    assert response.metadata["cache_hit_rate"] is None and response.metadata["provider"] == "ollama"
    assert response.finish_reason == "length" and response.ttft is not None
    [sent] = standin.requests
    assert sent["options"] == {"num_predict": 2, "temperature": 0.0} and sent["stream"] is True


def test_ollama_unknown_model_is_a_clear_4xx_error_not_retried() -> None:
    with OllamaStandInServer() as standin:
        llm = LLMInterface(ollama_url=standin.url)
        with pytest.raises(ProviderRequestError, match="not found"):
            asyncio.run(
                llm.chat_completion(
                    [{"role": "user", "content": "hi"}], provider="ollama", model="nope"
                )
            )
        assert len(standin.requests) == 1  # 4xx is never retried
