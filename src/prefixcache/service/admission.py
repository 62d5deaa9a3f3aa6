"""Fair use of the engine: how many requests a key, a tenant and the whole instance may
have in flight.

- per API key: at most ``service.max_concurrent_per_key`` requests at once (waiting ones
  included); the next one answers 429 with ``Retry-After`` at once;
- per tenant: at most ``tenant_limit()`` engine requests at once (``tenant_share`` of
  ``max_inflight``), so one tenant can never hold every slot; its next requests wait;
- per instance: at most ``max_inflight`` engine requests. Waiting requests get freed
  slots tenant by tenant in turn (round robin, oldest request first within a tenant), so
  a tenant with many queued requests does not starve one with a single request. A
  request that waits longer than ``queue_timeout_s`` answers 503 with ``Retry-After``.

These limits are per instance: they bound what this process sends to the engine (N
instances send at most N x ``max_inflight``). The per-minute rate limit is shared by every
instance through the database (``ratelimit.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from .errors import TooManyRequests, Unavailable


@dataclass(frozen=True)
class Limits:
    per_key: int
    per_tenant: int
    inflight: int
    queue_timeout_s: float


class Admission:
    def __init__(self, limits: Limits, registry: CollectorRegistry | None = None) -> None:
        self.limits = limits
        self.by_key: dict[str, int] = {}
        #: engine slots held per tenant
        self.by_tenant: dict[str, int] = {}
        self.inflight = 0
        #: tenant -> its waiting requests, in arrival order; tenants in turn order
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()
        self._inflight_gauge = Gauge(
            "prefixcache_inflight_requests",
            "Engine requests in flight, by tenant.",
            ("tenant",),
            registry=registry,
        )
        self._queued_gauge = Gauge(
            "prefixcache_queued_requests",
            "Requests waiting for an engine slot.",
            registry=registry,
        )
        self._refused = Counter(
            "prefixcache_refused_requests",
            "Requests refused by a concurrency limit.",
            ("reason",),
            registry=registry,
        )

    @contextlib.asynccontextmanager
    async def slot(self, key_id: str, tenant: str) -> AsyncIterator[None]:
        """Hold a place for one engine request of ``key_id`` (of ``tenant``)."""
        release = await self.acquire(key_id, tenant)
        try:
            yield
        finally:
            release()

    async def acquire(self, key_id: str, tenant: str) -> Callable[[], None]:
        """Take a place (429 at the key's limit, 503 after waiting too long); returns the
        function that gives it back (safe to call more than once)."""
        limits = self.limits
        if self.by_key.get(key_id, 0) >= limits.per_key:
            self._refused.labels("per_key").inc()
            raise TooManyRequests(
                f"This API key already has {limits.per_key} requests in flight "
                "(service.max_concurrent_per_key); retry when one has answered.",
                headers={"Retry-After": "1"},
            )
        self.by_key[key_id] = self.by_key.get(key_id, 0) + 1
        try:
            await self._engine_slot(tenant)
        except BaseException:
            self._drop(self.by_key, key_id)
            raise
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._drop(self.by_key, key_id)
                self._release(tenant)

        return release

    @staticmethod
    def _drop(counts: dict[str, int], name: str) -> None:
        left = counts.get(name, 0) - 1
        if left > 0:
            counts[name] = left
        else:
            counts.pop(name, None)

    def _may_start(self, tenant: str) -> bool:
        return (
            self.inflight < self.limits.inflight
            and self.by_tenant.get(tenant, 0) < self.limits.per_tenant
        )

    def _start(self, tenant: str) -> None:
        self.inflight += 1
        self.by_tenant[tenant] = self.by_tenant.get(tenant, 0) + 1
        self._inflight_gauge.labels(tenant).set(self.by_tenant[tenant])

    async def _engine_slot(self, tenant: str) -> None:
        if self._may_start(tenant) and tenant not in self._waiting:
            self._start(tenant)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(tenant, deque()).append(waiter)
        self._queued_gauge.inc()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.limits.queue_timeout_s)
        except (TimeoutError, asyncio.CancelledError) as exc:
            if waiter.done() and not waiter.cancelled():
                self._release(tenant)  # granted just as we gave up: pass it on
            else:
                waiter.cancel()
                self._forget(tenant, waiter)
            if isinstance(exc, TimeoutError):
                self._refused.labels("queue_timeout").inc()
                raise Unavailable(
                    f"No engine slot came free for {self.limits.queue_timeout_s:g} s (this "
                    f"tenant may hold {self.limits.per_tenant} of service.max_inflight = "
                    f"{self.limits.inflight}); retry shortly.",
                    headers={"Retry-After": "5"},
                ) from None
            raise
        finally:
            self._queued_gauge.dec()

    def _forget(self, tenant: str, waiter: asyncio.Future[None]) -> None:
        queue = self._waiting.get(tenant)
        if queue is not None:
            with contextlib.suppress(ValueError):
                queue.remove(waiter)
            if not queue:
                del self._waiting[tenant]

    def _release(self, tenant: str) -> None:
        """An engine slot of ``tenant`` is free: hand slots to waiting tenants in turn."""
        self.inflight -= 1
        self._drop(self.by_tenant, tenant)
        self._inflight_gauge.labels(tenant).set(self.by_tenant.get(tenant, 0))
        self._dispatch()

    def _dispatch(self) -> None:
        while self._waiting and self.inflight < self.limits.inflight:
            chosen = next((t for t in self._waiting if self._may_start(t)), None)
            if chosen is None:
                return  # every waiting tenant is at its share
            queue = self._waiting[chosen]
            waiter = queue.popleft()
            if queue:
                self._waiting.move_to_end(chosen)  # the other tenants go first next time
            else:
                del self._waiting[chosen]
            if not waiter.done():
                self._start(chosen)
                waiter.set_result(None)
