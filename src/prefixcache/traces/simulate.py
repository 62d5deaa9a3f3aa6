"""``prefixcache simulate``: replay a trace through a model of vLLM's automatic prefix
cache, on one replica or a fleet, to answer "what hit rate would this workload get?"
before the hardware exists.

The model follows vLLM v1's ``KVCacheManager`` and ``BlockPool`` (checked against them
request by request in ``tests/test_simulate.py``, which drives vLLM's own classes):

- a prompt is hashed in full blocks, each hash chained to its parent, the first seeded
  with ``cache_salt``; only full blocks are ever cached;
- a request takes the longest run of leading blocks found in the cache, never the block
  of its last prompt token (recomputed for the logits);
- it then holds ``ceil((prompt + output - 1) / block)`` blocks (the last sampled token
  is never fed back); its full blocks are cached under their hashes, output blocks
  included (their hashes are unique here unless the trace carries the output's ids);
- a pool has ``num_blocks`` blocks, one of them vLLM's reserved null block. Free blocks
  wait in a queue; a new block is taken from its front, and a cached block taken that
  way loses its hash (eviction). A finished request frees its blocks last-first: cached
  ones go to the back of the queue (least recently used are evicted first, and a
  request's tail before its head), uncached ones to the front (reused first). A cache
  hit takes a block out of the queue until its request finishes.

Requests are replayed one at a time per replica: concurrent requests in a real engine
hold their blocks at the same time, so under heavy concurrency a real engine evicts
somewhat more than this model.

Routing policies for N replicas: ``round_robin``, ``session_hash`` (the session id, or
the prompt's first block, hashed: vllm-router's ``consistent_hash`` on ``x-session-id``),
``sticky_least_loaded`` (a new session goes to the replica with the fewest sessions,
then stays), ``random`` (seeded), and ``cache_aware`` (the replica holding the longest
prefix of the prompt when it holds at least half of it and is not overloaded, else the
least loaded: an approximation of vllm-router's ``cache_aware``, whose cache threshold
and load balancing it mirrors with recent routing standing in for in-flight load).
"""

from __future__ import annotations

import hashlib
import random
import statistics
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..layout.cache_model import block_hashes, max_cacheable_blocks
from .records import TraceRecord

#: cache_aware, vllm-router's defaults: the share of the prompt a replica must hold to be
#: chosen for its cache, and the load gap that switches to least-loaded routing
CACHE_THRESHOLD = 0.3
BALANCE_ABS = 64
BALANCE_REL = 1.5


class Policy(StrEnum):
    ROUND_ROBIN = "round_robin"
    SESSION_HASH = "session_hash"
    STICKY_LEAST_LOADED = "sticky_least_loaded"
    RANDOM = "random"
    CACHE_AWARE = "cache_aware"


class BlockPool:
    """One replica's KV cache blocks, cached hashes and free queue, in vLLM's order."""

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 2:
            raise ValueError(f"a KV pool needs at least 2 blocks (got {num_blocks})")
        self.num_blocks = num_blocks
        # block 0 is vLLM's null block: never handed out
        self.free: OrderedDict[int, None] = OrderedDict((b, None) for b in range(1, num_blocks))
        self.hash_of: dict[int, int] = {}  # block id -> hash (cached blocks only)
        self.blocks_of: dict[int, dict[int, None]] = {}  # hash -> block ids holding it
        self.ref: dict[int, int] = {}
        self.evictions = 0

    def lookup(self, hashes: Sequence[int]) -> list[int]:
        """Block ids of the longest run of leading hashes in the cache."""
        out: list[int] = []
        for h in hashes:
            holders = self.blocks_of.get(h)
            if not holders:
                break
            out.append(next(iter(holders)))
        return out

    def cached_prefix(self, hashes: Sequence[int]) -> int:
        return len(self.lookup(hashes))

    def touch(self, blocks: Sequence[int]) -> None:
        for b in blocks:
            if self.ref.get(b, 0) == 0:
                self.free.pop(b, None)
            self.ref[b] = self.ref.get(b, 0) + 1

    def take(self, n: int) -> list[int]:
        if n > len(self.free):
            raise MemoryError(
                f"a request needs {n} free blocks but the pool has {len(self.free)}: the KV "
                "space is smaller than one request (raise --kv-blocks)"
            )
        out = []
        for _ in range(n):
            b, _none = self.free.popitem(last=False)
            h = self.hash_of.pop(b, None)
            if h is not None:
                holders = self.blocks_of[h]
                holders.pop(b, None)
                if not holders:
                    del self.blocks_of[h]
                self.evictions += 1
            self.ref[b] = 1
            out.append(b)
        return out

    def cache(self, block: int, h: int) -> None:
        if block not in self.hash_of:
            self.hash_of[block] = h
            self.blocks_of.setdefault(h, {})[block] = None

    def release(self, blocks: Sequence[int]) -> None:
        """Free a finished request's blocks, last block first (vLLM's eviction order)."""
        first: list[int] = []
        for b in reversed(blocks):
            self.ref[b] -= 1
            if self.ref[b] == 0:
                if b in self.hash_of:
                    self.free[b] = None  # back of the queue: evicted last
                else:
                    first.append(b)
        for b in reversed(first):  # front of the queue, in the order given
            self.free[b] = None
            self.free.move_to_end(b, last=False)

    @property
    def cached_blocks(self) -> int:
        return len(self.hash_of)


@dataclass(frozen=True)
class SimRequest:
    """One request to replay: its prompt tokens, output length, salt and session."""

    tokens: Sequence[int]
    output_tokens: int = 1
    salt: str | None = None
    session: str | None = None
    output_ids: Sequence[int] | None = None


@dataclass(frozen=True)
class SimResult:
    index: int
    replica: int
    prompt_tokens: int
    cached_tokens: int


@dataclass
class SimReport:
    policy: Policy
    replicas: int
    block_size: int
    num_blocks: int
    results: list[SimResult]
    evictions: list[int]
    per_replica_requests: list[int] = field(default_factory=list)
    per_replica_cached: list[int] = field(default_factory=list)

    @property
    def prompt_tokens(self) -> int:
        return sum(r.prompt_tokens for r in self.results)

    @property
    def cached_tokens(self) -> int:
        return sum(r.cached_tokens for r in self.results)

    @property
    def hit_rate(self) -> float | None:
        total = self.prompt_tokens
        return self.cached_tokens / total if total else None

    @property
    def balance(self) -> float | None:
        """Busiest replica's requests over the mean (1.00: even)."""
        counts = self.per_replica_requests
        if not counts or not sum(counts):
            return None
        return max(counts) / (sum(counts) / len(counts))

    def savings(self, prefill_tokens_per_s: float | None) -> dict[str, float | None]:
        """Prefill avoided; with a measured prefill rate, the seconds it is worth."""
        saved = self.cached_tokens
        n = len(self.results) or 1
        if not prefill_tokens_per_s:
            return {
                "prefill_tokens_saved": float(saved),
                "ttft_saved_mean_s": None,
                "gpu_seconds_saved": None,
            }
        seconds = saved / prefill_tokens_per_s
        return {
            "prefill_tokens_saved": float(saved),
            "ttft_saved_mean_s": seconds / n,
            "gpu_seconds_saved": seconds,
        }

    def to_json(self, prefill_tokens_per_s: float | None = None) -> dict[str, Any]:
        return {
            "policy": self.policy.value,
            "replicas": self.replicas,
            "block_size": self.block_size,
            "kv_blocks_per_replica": self.num_blocks,
            "requests": len(self.results),
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "hit_rate": self.hit_rate,
            "balance": self.balance,
            "evictions": self.evictions,
            "per_replica_requests": self.per_replica_requests,
            "per_replica_cached_tokens": self.per_replica_cached,
            **self.savings(prefill_tokens_per_s),
            "per_request": [
                {
                    "index": r.index,
                    "replica": r.replica,
                    "prompt_tokens": r.prompt_tokens,
                    "cached_tokens": r.cached_tokens,
                }
                for r in self.results
            ],
        }


def _stable(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class Simulator:
    """N replicas, each a ``BlockPool``, and a routing policy."""

    def __init__(
        self,
        *,
        block_size: int,
        num_blocks: int,
        replicas: int = 1,
        policy: Policy | str = Policy.ROUND_ROBIN,
        seed: int = 0,
        concurrency: int = 1,
    ) -> None:
        if block_size <= 0:
            raise ValueError(f"block_size must be > 0 (got {block_size})")
        if replicas < 1:
            raise ValueError(f"replicas must be >= 1 (got {replicas})")
        self.block_size = block_size
        self.num_blocks = num_blocks
        #: requests in flight at once (cache_aware's load: the previous concurrency - 1)
        self.concurrency = max(1, concurrency)
        self.policy = Policy(policy)
        self.pools = [BlockPool(num_blocks) for _ in range(replicas)]
        self._rng = random.Random(seed)
        self._next = 0
        self._sticky: dict[str, int] = {}
        self._sessions = [0] * replicas
        self._requests = [0] * replicas
        self._cached = [0] * replicas
        self._unique = 0
        self._recent: list[int] = []
        self.results: list[SimResult] = []

    def _route(self, request: SimRequest, hashes: Sequence[int]) -> int:
        n = len(self.pools)
        if n == 1:
            return 0
        key = request.session or f"prefix:{hashes[0] if hashes else 0}"
        if self.policy is Policy.ROUND_ROBIN:
            self._next += 1
            return (self._next - 1) % n
        if self.policy is Policy.SESSION_HASH:
            return _stable(key) % n
        if self.policy is Policy.RANDOM:
            return self._rng.randrange(n)
        if self.policy is Policy.STICKY_LEAST_LOADED:
            if key not in self._sticky:
                replica = min(range(n), key=lambda r: (self._sessions[r], r))
                self._sticky[key] = replica
                self._sessions[replica] += 1
            return self._sticky[key]
        return self._cache_aware(hashes)

    def _cache_aware(self, hashes: Sequence[int]) -> int:
        """vllm-router's ``cache_aware``: when the load is balanced, the replica with the
        longest cached prefix if it covers more than ``CACHE_THRESHOLD`` of the prompt,
        else the replica caching the least (most room); when unbalanced (max - min >
        ``BALANCE_ABS`` and max > ``BALANCE_REL`` x min), the least loaded. The router
        counts requests in flight; the replay stands for them with the previous
        ``concurrency - 1`` requests, and (as the router does) sends a request to an idle
        replica first."""
        n = len(self.pools)
        recent = self._recent
        load = [recent.count(r) for r in range(n)]
        idle = [r for r in range(n) if load[r] == 0]
        if idle and self.concurrency > 1:  # an idle replica first, the one caching least
            choice = min(idle, key=lambda r: (self.pools[r].cached_blocks, r))
        elif max(load) - min(load) > BALANCE_ABS and max(load) > BALANCE_REL * min(load):
            choice = min(range(n), key=lambda r: (load[r], r))
        else:
            best = max(range(n), key=lambda r: (self.pools[r].cached_prefix(hashes), -r))
            ratio = self.pools[best].cached_prefix(hashes) / len(hashes) if hashes else 0.0
            choice = (
                best
                if ratio > CACHE_THRESHOLD
                else min(range(n), key=lambda r: (self.pools[r].cached_blocks, r))
            )
        recent.append(choice)
        if len(recent) > max(self.concurrency - 1, 0):
            recent.pop(0)
        return choice

    def _output_hashes(self, request: SimRequest, full: int) -> list[int]:
        """Hashes of the full blocks past the prompt's (unique unless the ids are known)."""
        prompt_full = len(request.tokens) // self.block_size
        if full <= prompt_full:
            return []
        if request.output_ids is not None:
            ids = list(request.tokens) + list(request.output_ids)
            return block_hashes(ids[: full * self.block_size], self.block_size, request.salt)[
                prompt_full:
            ]
        out = []
        for _ in range(full - prompt_full):
            self._unique += 1
            out.append(hash(("prefixcache-output", self._unique)))
        return out

    def replay(self, request: SimRequest) -> SimResult:
        b = self.block_size
        tokens = request.tokens
        hashes = block_hashes(tokens, b, request.salt)
        replica = self._route(request, hashes)
        pool = self.pools[replica]
        limit = max_cacheable_blocks(len(tokens), b)
        hit = pool.lookup(hashes[:limit])
        pool.touch(hit)
        computed = max(len(tokens) + max(request.output_tokens, 1) - 1, len(tokens))
        total_blocks = -(-computed // b)
        try:
            new = pool.take(total_blocks - len(hit))
        except MemoryError:
            pool.release(hit)
            raise
        blocks = hit + new
        full = computed // b
        all_hashes = hashes[: min(full, len(hashes))] + self._output_hashes(request, full)
        for i in range(len(hit), full):
            pool.cache(blocks[i], all_hashes[i])
        pool.release(blocks)
        cached = len(hit) * b
        result = SimResult(len(self.results), replica, len(tokens), cached)
        self.results.append(result)
        self._requests[replica] += 1
        self._cached[replica] += cached
        return result

    def report(self) -> SimReport:
        return SimReport(
            policy=self.policy,
            replicas=len(self.pools),
            block_size=self.block_size,
            num_blocks=self.num_blocks,
            results=list(self.results),
            evictions=[p.evictions for p in self.pools],
            per_replica_requests=list(self._requests),
            per_replica_cached=list(self._cached),
        )


def requests_from_trace(
    records: Sequence[TraceRecord], tokens: Sequence[Sequence[int]], *, default_output: int = 1
) -> list[SimRequest]:
    """Simulator requests from a tokenized trace (output length from its usage)."""
    return [
        SimRequest(
            tokens=toks,
            output_tokens=r.completion_tokens if r.completion_tokens else default_output,
            salt=r.cache_salt,
            session=r.session,
        )
        for r, toks in zip(records, tokens, strict=True)
    ]


def prefill_rate_from(records: Sequence[TraceRecord]) -> float | None:
    """Prefill tokens per second from a trace's own measurements: the median over
    requests of uncached prompt tokens / TTFT (requests with at least 64 of them)."""
    rates = [
        (r.prompt_tokens - (r.cached_tokens or 0)) / r.ttft
        for r in records
        if r.prompt_tokens
        and r.ttft
        and r.ttft > 0
        and r.prompt_tokens - (r.cached_tokens or 0) >= 64
    ]
    return float(statistics.median(rates)) if rates else None


@dataclass(frozen=True)
class Versus:
    """Predicted against measured cached tokens, over the requests that have a measure."""

    requests: int
    equal: int
    predicted_hit_rate: float | None
    measured_hit_rate: float | None
    #: (request index, predicted, measured) of the first requests that differ
    first_differences: tuple[tuple[int, int, int], ...]

    @property
    def gap_points(self) -> float:
        return abs((self.predicted_hit_rate or 0.0) - (self.measured_hit_rate or 0.0)) * 100

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "equal": self.equal,
            "predicted_hit_rate": self.predicted_hit_rate,
            "measured_hit_rate": self.measured_hit_rate,
            "first_differences": [
                {"index": i, "predicted": p, "measured": m} for i, p, m in self.first_differences
            ],
        }


def versus_measured(
    report: SimReport, measured: Sequence[int | None], *, limit: int = 10
) -> Versus | None:
    """The simulation beside the cached tokens the server reported (None where unknown)."""
    rows = [
        (i, r, m)
        for i, (r, m) in enumerate(zip(report.results, measured, strict=True))
        if m is not None
    ]
    if not rows:
        return None
    prompt = sum(r.prompt_tokens for _, r, _ in rows)
    return Versus(
        requests=len(rows),
        equal=sum(1 for _, r, m in rows if r.cached_tokens == m),
        predicted_hit_rate=sum(r.cached_tokens for _, r, _ in rows) / prompt if prompt else None,
        measured_hit_rate=sum(m for _, _, m in rows) / prompt if prompt else None,
        first_differences=tuple(
            (i, r.cached_tokens, m) for i, r, m in rows if r.cached_tokens != m
        )[:limit],
    )


def simulate(
    requests: Sequence[SimRequest],
    *,
    block_size: int,
    num_blocks: int,
    replicas: int = 1,
    policy: Policy | str = Policy.ROUND_ROBIN,
    seed: int = 0,
    concurrency: int = 1,
) -> SimReport:
    sim = Simulator(
        block_size=block_size,
        num_blocks=num_blocks,
        replicas=replicas,
        policy=policy,
        seed=seed,
        concurrency=concurrency,
    )
    for request in requests:
        sim.replay(request)
    return sim.report()


def kv_blocks(*, kv_bytes: float, bytes_per_token: float, block_size: int) -> int:
    """Blocks a KV space holds: ``kv_bytes / (bytes_per_token * block_size)``."""
    return int(kv_bytes // (bytes_per_token * block_size))


def bytes_per_token(*, layers: int, kv_heads: int, head_dim: int, dtype_bytes: int = 2) -> int:
    """KV bytes one token takes: keys and values, every layer."""
    return 2 * layers * kv_heads * head_dim * dtype_bytes


# -- a study: one trace under several KV sizes and policies ------------------------------


def kv_sizes(
    *,
    kv_blocks_per_replica: Sequence[int] = (),
    kv_gib: Sequence[float] = (),
    kv_bytes_per_token: int | None = None,
    block_size: int,
    server_blocks: int | None = None,
) -> list[int]:
    """The KV sizes (blocks per replica) to simulate: the ones given in blocks, then the
    ones given in GiB, else the server's; ``ValueError`` naming the option to give."""
    sizes = list(kv_blocks_per_replica)
    if kv_gib:
        if kv_bytes_per_token is None:
            raise ValueError("--kv-gib needs --kv-bytes-per-token")
        sizes += [
            kv_blocks(kv_bytes=g * 2**30, bytes_per_token=kv_bytes_per_token, block_size=block_size)
            for g in kv_gib
        ]
    if not sizes and server_blocks:
        sizes = [server_blocks]
    if not sizes:
        raise ValueError(
            "Give the KV space: --kv-blocks N, or --kv-gib G with --kv-bytes-per-token B, or "
            "--base-url of a server to read it from."
        )
    return sizes


def parse_policies(names: Sequence[str]) -> list[Policy]:
    """Policy names (``all`` for every one) as ``Policy`` values; ``ValueError`` if unknown."""
    chosen = [n.strip() for n in names if n.strip()] or [Policy.ROUND_ROBIN.value]
    if "all" in chosen:
        return list(Policy)
    unknown = [n for n in chosen if n not in {p.value for p in Policy}]
    if unknown:
        raise ValueError(f"one of {', '.join(p.value for p in Policy)} or all (got {unknown})")
    return [Policy(n) for n in chosen]


@dataclass
class Study:
    """One trace simulated under each KV size and policy, beside what it measured."""

    trace: str
    tokens_from: str
    requests: int
    prefill_rate: float | None
    prefill_rate_source: str | None
    reports: list[SimReport]
    versus: Versus | None

    def to_json(self) -> dict[str, Any]:
        return {
            "trace": self.trace,
            "tokens_from": self.tokens_from,
            "requests": self.requests,
            "prefill_tokens_per_s": self.prefill_rate,
            "prefill_rate_source": self.prefill_rate_source,
            "runs": [r.to_json(self.prefill_rate) for r in self.reports],
            "measured": self.versus.to_json() if self.versus else None,
        }


def study(
    records: Sequence[TraceRecord],
    tokens: Sequence[Sequence[int]],
    *,
    trace: str,
    tokens_from: str,
    block_size: int,
    sizes: Sequence[int],
    policies: Sequence[Policy],
    replicas: int = 1,
    seed: int = 0,
    concurrency: int = 1,
    prefill_rate: float | None = None,
) -> Study:
    """Simulate ``records`` at every size and policy (one policy on one replica); compare
    the first run with the cached tokens the trace measured."""
    requests = requests_from_trace(records, tokens)
    rate = prefill_rate or prefill_rate_from(records)
    reports = [
        simulate(
            requests,
            block_size=block_size,
            num_blocks=blocks,
            replicas=replicas,
            policy=p,
            seed=seed,
            concurrency=concurrency,
        )
        for blocks in sizes
        for p in (policies if replicas > 1 else policies[:1])
    ]
    versus = (
        versus_measured(reports[0], [r.cached_tokens for r in records]) if replicas == 1 else None
    )
    source = "option" if prefill_rate else ("trace" if rate else None)
    return Study(trace, tokens_from, len(records), rate, source, reports, versus)
