"""The LLM client: request/response models, providers, ``LLMInterface``, the server
inspector (``/tokenize``, ``/metrics``) and the metrics recorder.

Needs the ``llm`` extra (httpx, prometheus-client).
"""

from .._extras import require

require("llm", "prefixcache.llm (the LLM client)")

from .inspector import EngineCacheStats, EngineInspector, parse_engine_metrics  # noqa: E402
from .interface import LLMInterface  # noqa: E402
from .metrics import Aggregate, CacheMetricsRecorder, RequestRecord  # noqa: E402
from .models import LLMRequest, LLMResponse, describe_cache  # noqa: E402
from .providers import (  # noqa: E402
    CacheReportingWarning,
    OllamaProvider,
    RetryPolicy,
    VLLMProvider,
)

__all__ = [
    "Aggregate",
    "CacheMetricsRecorder",
    "CacheReportingWarning",
    "EngineCacheStats",
    "EngineInspector",
    "LLMInterface",
    "LLMRequest",
    "LLMResponse",
    "OllamaProvider",
    "RequestRecord",
    "RetryPolicy",
    "VLLMProvider",
    "describe_cache",
    "parse_engine_metrics",
]
