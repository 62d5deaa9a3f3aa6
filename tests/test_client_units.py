"""Pure functions of the client, metrics and inspection modules (no server needed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prefixcache import AgentTierMap
from prefixcache.errors import PromptTooLongError, ProviderRequestError
from prefixcache.layout.cache_model import common_prefix_len, predicted_cached_tokens
from prefixcache.llm.inspector import parse_engine_metrics
from prefixcache.llm.metrics import CacheMetricsRecorder, percentile
from prefixcache.llm.models import LLMResponse, describe_cache, hit_rate
from prefixcache.llm.providers import cached_tokens_from_usage, raise_for_client_error

# Lines as vLLM 0.32.0 printed them on /metrics (trimmed to the families read here).
METRICS = """\
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="smollm2"} 12615.0
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="smollm2"} 4096.0
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="128",cache_dtype="auto",enable_prefix_caching="True",engine="0"} 1.0
"""


def test_parse_engine_metrics() -> None:
    stats = parse_engine_metrics(METRICS)
    assert (stats.queries, stats.hits, stats.block_size, stats.prefix_caching_enabled) == (
        12615,
        4096,
        128,
        True,
    )
    assert stats.hit_rate == pytest.approx(4096 / 12615)


@pytest.mark.parametrize(
    ("prompt", "shared", "block", "expected"),
    [
        (3987, 3987, 128, 3968),  # the notes' measurement: 31 full blocks
        (4096, 4096, 128, 3968),  # the last token is always recomputed
        (4097, 4097, 128, 4096),
        (5000, 300, 128, 256),  # never past the first differing token
        (100, 100, 128, 0),  # no full block
        (33, 33, 16, 32),
    ],
)
def test_predicted_cached_tokens(prompt: int, shared: int, block: int, expected: int) -> None:
    assert predicted_cached_tokens(prompt, shared, block) == expected


@given(st.integers(0, 20_000), st.integers(0, 20_000), st.sampled_from([16, 32, 128]))
def test_prediction_is_block_aligned_and_bounded(prompt: int, shared: int, block: int) -> None:
    got = predicted_cached_tokens(prompt, min(shared, prompt), block)
    assert got % block == 0 and 0 <= got <= max(prompt - 1, 0) and got <= shared


def test_common_prefix_len() -> None:
    assert common_prefix_len([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix_len([1, 2], [1, 2, 3]) == 2


def test_cached_tokens_unknown_is_none_not_zero() -> None:
    # what vLLM sends without --enable-prompt-tokens-details
    assert cached_tokens_from_usage({"prompt_tokens": 10, "prompt_tokens_details": None}) is None
    assert cached_tokens_from_usage({"prompt_tokens": 10}) is None
    assert cached_tokens_from_usage({"prompt_tokens_details": {"cached_tokens": 0}}) == 0
    assert hit_rate(None, 10) is None and hit_rate(5, 10) == 0.5


def test_client_errors_are_typed() -> None:
    body = (
        '{"error":{"message":"This model\'s maximum context length is 8192 tokens. However, your '
        'prompt contains at least 8193 input tokens, which exceeds this limit","code":400}}'
    )
    with pytest.raises(PromptTooLongError) as info:
        raise_for_client_error(400, body, "http://x", "m")
    assert (info.value.prompt_tokens, info.value.max_context) == (8193, 8192)
    with pytest.raises(ProviderRequestError, match="HTTP 404"):
        raise_for_client_error(404, '{"error":{"message":"no such model"}}', "http://x", "m")


def _response(prompt: int, cached: int | None, ttft: float) -> LLMResponse:
    return LLMResponse(
        "ok",
        {
            "prompt_tokens": prompt,
            "completion_tokens": 1,
            "total_tokens": prompt + 1,
            "cached_tokens": cached,
        },
        {
            "cached_tokens": cached,
            "cache_hit_rate": hit_rate(cached, prompt),
            "ttft": ttft,
            "provider": "vllm",
            "model": "m",
            "served_model": "m",
            "requested_model": "m",
            "request_id": "r",
        },
        ttft + 0.1,
        "length",
    )


def test_recorder_aggregates_per_agent_and_tier() -> None:
    recorder = CacheMetricsRecorder(AgentTierMap())
    recorder.record(_response(4911, 0, 5.0), agent_type="frontend-engineer")
    recorder.record(_response(4911, 4845, 0.2), agent_type="backend-engineer")
    recorder.record(_response(1000, None, 0.3), agent_type="code-reviewer")
    agents = {a.key: a for a in recorder.by_agent()}
    be = agents["backend-engineer"]
    assert agents["frontend-engineer"].hit_rate == 0.0
    assert be.hit_rate == pytest.approx(4845 / 4911) and be.versus_expected == "above"
    [t1, t2] = recorder.by_tier()
    assert t1.key == "TIER_1_DEFAULT" and t1.hit_rate == pytest.approx(4845 / 9822)
    assert t1.versus_expected == "below" and t1.ttft_p50 == pytest.approx(2.6)
    assert t2.cached_tokens is None and t2.versus_expected == "n/a"
    text = recorder.exposition().decode()
    gauge = 'prefixcache_cache_hit_ratio{agent_type="backend-engineer",tier="TIER_1_DEFAULT"} '
    [line] = [x for x in text.splitlines() if x.startswith(gauge)]
    assert float(line.split()[-1]) == pytest.approx(4845 / 4911)
    assert 'prefixcache_cache_hit_ratio{agent_type="code-reviewer"' not in text  # unknown: no gauge
    assert 'prefixcache_cache_unreported_requests_total{agent_type="code-reviewer"' in text
    assert (
        describe_cache(_response(4911, 4845, 0.2))
        == "Cache Performance: 98.7% hit rate (4845/4911 tokens cached)"
    )


def test_percentile() -> None:
    assert percentile([], 50) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 95) == pytest.approx(4.8)
