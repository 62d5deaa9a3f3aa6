"""The ``unmodified-apps`` scenario: apps nobody rewrote (``apps.py``), through the
gateway of a real ``prefixcache serve`` with its stabilizer off, in shadow and on, beside
the same requests sent straight to the engine, and the hand-fixed version of each app
(the ceiling).

Every arm runs under a salt of its own (the direct arms set ``cache_salt``; the gateway
arms are three tenants, whose salts the service sets), interleaved request by request
with the arms' order rotating, so no arm can reuse another's blocks and background load
falls on all alike. Each request is streamed (TTFT at the client, the usage chunk for
the cached tokens). A failed request is a result row, not an aborted run.

The shadow arm's predictions (what ``on`` would measure, and what the app gets as
written) are read back from the service's ``/stats``, per family (the app's name is its
``X-Agent-Type``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from ..llm.models import hit_rate
from .apps import APPS, AppRequest, UnmodifiedApp
from .service import ServiceHandle, sse_events

#: the arms, in report order
ARMS = ("direct", "off", "shadow", "on", "hand-fixed")
#: the gateway arms' tenants (their stabilizer modes are set in the service's config)
TENANTS = {"off": "apps-off", "shadow": "apps-shadow", "on": "apps-on"}
STABILIZE_TENANTS = {tenant: arm for arm, tenant in TENANTS.items()}
#: requests per app (the first two teach the stabilizer the family)
REQUESTS = 6


@dataclass(frozen=True)
class AppResult:
    app: str
    arm: str
    index: int  # 1-based
    prompt_tokens: int
    cached_tokens: int | None
    ttft: float | None
    time: float
    #: ``X-Prefixcache-Stabilized`` of the answer (the ``on`` arm's rewrites)
    stabilized: str | None = None
    success: bool = True
    error: str | None = None

    @property
    def rewritten(self) -> bool:
        return bool(self.stabilized) and not str(self.stabilized).startswith("lines=0; tools=un")


@dataclass(frozen=True)
class FamilyPrediction:
    app: str
    requests: int
    predicted: float | None  # the prompts as written
    stabilized: float | None  # as the stabilizer would send them
    moves: tuple[str, ...]


@dataclass
class AppsRun:
    results: list[AppResult]
    predictions: dict[str, FamilyPrediction]
    warmup_time: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "results": [asdict(r) for r in self.results],
            "predictions": {k: asdict(v) for k, v in self.predictions.items()},
        }


async def _stream(
    http: httpx.AsyncClient, url: str, body: Mapping[str, Any], headers: Mapping[str, str]
) -> tuple[dict[str, Any], float | None, float, str | None]:
    """One streamed chat completion: (usage, ttft, seconds, stabilized header)."""
    started = time.perf_counter()
    ttft: float | None = None
    usage: dict[str, Any] = {}
    async with http.stream("POST", url, json=dict(body), headers=dict(headers)) as answer:
        if answer.status_code != 200:
            text = (await answer.aread()).decode(errors="replace")[:300]
            raise RuntimeError(f"{url} answered {answer.status_code}: {text}")
        stabilized = answer.headers.get("x-prefixcache-stabilized")
        async for _event, chunk in sse_events(answer.aiter_lines()):
            if ttft is None and chunk.get("choices"):
                ttft = time.perf_counter() - started
            if chunk.get("usage"):
                usage = chunk["usage"]
    return usage, ttft, time.perf_counter() - started, stabilized


def _body(request: AppRequest, model: str, max_tokens: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": request.messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.tools is not None:
        body["tools"] = request.tools
        body["tool_choice"] = "none"  # the tools describe the app; no tool call is wanted
    return body


async def run_apps(
    http: httpx.AsyncClient,
    *,
    engine_url: str,
    model: str,
    service: ServiceHandle,
    static: str,
    salt: str,
    apps: Sequence[UnmodifiedApp] = APPS,
    requests: int = REQUESTS,
    max_tokens: int = 8,
    on_request: Callable[[str], None] = lambda _msg: None,
) -> AppsRun:
    """Every app's requests through every arm, interleaved; then the shadow figures."""
    results: list[AppResult] = []
    step = 0
    for n in range(requests):
        for app in apps:
            arms = ARMS[step % len(ARMS) :] + ARMS[: step % len(ARMS)]
            step += 1
            for arm in arms:
                request = app.request(n, static, fixed=arm == "hand-fixed")
                body = _body(request, model, max_tokens)
                headers = {"x-agent-type": app.name}
                if arm in TENANTS:
                    url = f"{service.url}/v1/chat/completions"
                    headers["Authorization"] = f"Bearer {service.tenant_keys[TENANTS[arm]]}"
                else:
                    url = f"{engine_url}/v1/chat/completions"
                    body["cache_salt"] = f"{salt}-{arm}"
                try:
                    usage, ttft, took, stabilized = await _stream(http, url, body, headers)
                except (httpx.HTTPError, RuntimeError, ValueError) as exc:
                    results.append(
                        AppResult(
                            app.name,
                            arm,
                            n + 1,
                            0,
                            None,
                            None,
                            0.0,
                            None,
                            False,
                            f"{type(exc).__name__}: {str(exc)[:200]}",
                        )
                    )
                    on_request(f"unmodified-apps {arm} {app.name} #{n + 1} FAILED")
                    continue
                details = usage.get("prompt_tokens_details") or {}
                cached = details.get("cached_tokens") if isinstance(details, dict) else None
                results.append(
                    AppResult(
                        app.name,
                        arm,
                        n + 1,
                        int(usage.get("prompt_tokens") or 0),
                        None if cached is None else int(cached),
                        ttft,
                        took,
                        stabilized,
                    )
                )
                on_request(f"unmodified-apps {arm} {app.name} #{n + 1}")
    return AppsRun(results, await shadow_predictions(http, service, apps, requests))


async def shadow_predictions(
    http: httpx.AsyncClient,
    service: ServiceHandle,
    apps: Sequence[UnmodifiedApp],
    requests: int,
    timeout: float = 30.0,
) -> dict[str, FamilyPrediction]:
    """The shadow tenant's per-family predictions, from ``/stats``, once every request
    of every app is recorded there (the predictions are made after each response)."""
    names = {a.name for a in apps}
    key = service.tenant_keys[TENANTS["shadow"]]
    deadline = time.monotonic() + timeout
    out: dict[str, FamilyPrediction] = {}
    while time.monotonic() < deadline:
        answer = await http.get(f"{service.url}/stats", headers={"Authorization": f"Bearer {key}"})
        answer.raise_for_status()
        families = answer.json().get("families") or []
        out = {
            f["family"]: FamilyPrediction(
                f["family"],
                int(f["requests"]),
                f.get("predicted_hit_rate"),
                f.get("stabilized_hit_rate"),
                tuple(f.get("moves") or ()),
            )
            for f in families
            if f.get("family") in names
        }
        if len(out) == len(names) and all(p.requests >= requests for p in out.values()):
            break
        await asyncio.sleep(0.5)
    return out


def app_hit_rate(rows: Sequence[AppResult], after: int = 0) -> float | None:
    """cached / prompt tokens over the successful requests after the first ``after``."""
    chosen = [r for r in rows if r.success and r.index > after and r.cached_tokens is not None]
    return hit_rate(sum(r.cached_tokens or 0 for r in chosen), sum(r.prompt_tokens for r in chosen))
