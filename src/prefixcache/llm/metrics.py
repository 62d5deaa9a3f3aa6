"""Cache metrics: every response passes through a recorder, which aggregates it per
agent and per tier and exports Prometheus metrics.

Memory is bounded whatever the traffic: per group, running sums and the last
``SAMPLE`` TTFTs and request times (for p50/p95); the recorder keeps only the last
``RECENT`` requests themselves (``records``)."""

from __future__ import annotations

import statistics
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..prompts.tiers import AgentTierMap
from .models import LLMResponse, hit_rate

_TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class RequestRecord:
    agent_type: str
    tier: str
    base_prompt_key: str
    prompt_tokens: int
    cached_tokens: int | None
    ttft: float | None
    processing_time: float

    @property
    def hit_rate(self) -> float | None:
        return hit_rate(self.cached_tokens, self.prompt_tokens)


@dataclass(frozen=True)
class Aggregate:
    """Figures over a group of requests (one agent or one tier)."""

    key: str
    requests: int
    prompt_tokens: int
    cached_tokens: int | None
    ttft_p50: float | None
    ttft_p95: float | None
    processing_p50: float | None
    expected_range: tuple[float, float] | None = None

    @property
    def hit_rate(self) -> float | None:
        return hit_rate(self.cached_tokens, self.prompt_tokens)

    @property
    def versus_expected(self) -> str:
        """``within``, ``below`` or ``above`` the tier's expected range (``n/a`` if unknown)."""
        rate, expected = self.hit_rate, self.expected_range
        if rate is None or expected is None:
            return "n/a"
        if rate < expected[0]:
            return "below"
        return "above" if rate > expected[1] else "within"


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def aggregate(
    key: str, records: Iterable[RequestRecord], expected: tuple[float, float] | None = None
) -> Aggregate:
    rows = list(records)
    known = [r.cached_tokens for r in rows if r.cached_tokens is not None]
    ttfts = [r.ttft for r in rows if r.ttft is not None]
    return Aggregate(
        key=key,
        requests=len(rows),
        prompt_tokens=sum(r.prompt_tokens for r in rows),
        cached_tokens=sum(known) if len(known) == len(rows) and rows else None,
        ttft_p50=percentile(ttfts, 50),
        ttft_p95=percentile(ttfts, 95),
        processing_p50=statistics.median([r.processing_time for r in rows]) if rows else None,
        expected_range=expected,
    )


#: TTFTs and request times kept per group for its percentiles
SAMPLE = 2048
#: requests kept whole (``CacheMetricsRecorder.records``)
RECENT = 1024


@dataclass
class _Running:
    """A group's running figures: sums, and the latest samples for percentiles."""

    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int | None = 0
    ttfts: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLE))
    times: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLE))

    def add(self, rec: RequestRecord) -> None:
        self.requests += 1
        self.prompt_tokens += rec.prompt_tokens
        self.cached_tokens = (
            None
            if self.cached_tokens is None or rec.cached_tokens is None
            else self.cached_tokens + rec.cached_tokens
        )
        if rec.ttft is not None:
            self.ttfts.append(rec.ttft)
        self.times.append(rec.processing_time)

    def aggregate(self, key: str, expected: tuple[float, float] | None) -> Aggregate:
        return Aggregate(
            key=key,
            requests=self.requests,
            prompt_tokens=self.prompt_tokens,
            cached_tokens=self.cached_tokens if self.requests else None,
            ttft_p50=percentile(self.ttfts, 50),
            ttft_p95=percentile(self.ttfts, 95),
            processing_p50=statistics.median(self.times) if self.times else None,
            expected_range=expected,
        )


class CacheMetricsRecorder:
    """Aggregates responses per agent and tier and mirrors them into Prometheus metrics
    (``prefixcache_*``), in bounded memory."""

    def __init__(self, tiers: AgentTierMap, registry: CollectorRegistry | None = None) -> None:
        self.tiers = tiers
        #: the latest ``RECENT`` requests
        self.records: deque[RequestRecord] = deque(maxlen=RECENT)
        self._agents: dict[str, _Running] = {}
        self._tier_figures: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self.registry = registry or CollectorRegistry()
        labels = ("agent_type", "tier")
        self._requests = Counter(
            "prefixcache_requests", "Chat requests recorded.", labels, registry=self.registry
        )
        self._prompt = Counter(
            "prefixcache_prompt_tokens",
            "Prompt tokens reported by the server.",
            labels,
            registry=self.registry,
        )
        self._cached = Counter(
            "prefixcache_cached_tokens",
            "Prompt tokens served from the prefix cache.",
            labels,
            registry=self.registry,
        )
        self._unknown = Counter(
            "prefixcache_cache_unreported_requests",
            "Requests whose server did not report cached tokens.",
            labels,
            registry=self.registry,
        )
        self._ratio = Gauge(
            "prefixcache_cache_hit_ratio",
            "Cached / prompt tokens over all recorded requests.",
            labels,
            registry=self.registry,
        )
        self._ttft = Histogram(
            "prefixcache_ttft_seconds",
            "Time to first token.",
            labels,
            buckets=_TTFT_BUCKETS,
            registry=self.registry,
        )
        self._processing = Histogram(
            "prefixcache_processing_seconds",
            "Whole request time.",
            labels,
            buckets=_TTFT_BUCKETS,
            registry=self.registry,
        )

    def record(
        self,
        response: LLMResponse,
        *,
        agent_type: str | None = None,
        base_prompt_key: str | None = None,
    ) -> RequestRecord:
        if agent_type is not None:
            profile = self.tiers.profile(agent_type)
            name, tier, base = (
                profile.agent_type,
                profile.tier.value,
                base_prompt_key or profile.base_prompt,
            )
        else:
            name, tier, base = "unknown", "unknown", base_prompt_key or "unknown"
        rec = RequestRecord(
            name,
            tier,
            base,
            response.prompt_tokens,
            response.cached_tokens,
            response.ttft,
            response.processing_time,
        )
        with self._lock:
            self.records.append(rec)
            self._agents.setdefault(name, _Running()).add(rec)
            self._tier_figures.setdefault(tier, _Running()).add(rec)
            self._requests.labels(name, tier).inc()
            self._prompt.labels(name, tier).inc(rec.prompt_tokens)
            if rec.cached_tokens is None:
                self._unknown.labels(name, tier).inc()
            else:
                self._cached.labels(name, tier).inc(rec.cached_tokens)
            running = self._agents[name]
            ratio = hit_rate(running.cached_tokens, running.prompt_tokens)
            if ratio is not None:
                self._ratio.labels(name, tier).set(ratio)
            if rec.ttft is not None:
                self._ttft.labels(name, tier).observe(rec.ttft)
            self._processing.labels(name, tier).observe(rec.processing_time)
        return rec

    def by_agent(self) -> list[Aggregate]:
        with self._lock:
            return [
                running.aggregate(name, self._expected(name))
                for name, running in sorted(self._agents.items())
            ]

    def by_tier(self) -> list[Aggregate]:
        with self._lock:
            return [
                running.aggregate(tier, self._tier_expected(tier))
                for tier, running in sorted(self._tier_figures.items())
            ]

    def _expected(self, agent: str) -> tuple[float, float] | None:
        return (
            None
            if agent == "unknown"
            else self.tiers.tier_info(self.tiers.profile(agent).tier).expected_range
        )

    def _tier_expected(self, tier: str) -> tuple[float, float] | None:
        for info in self.tiers.tiers():
            if info.tier.value == tier:
                return info.expected_range
        return None

    def exposition(self) -> bytes:
        """Prometheus text exposition of this recorder's metrics."""
        return generate_latest(self.registry)
