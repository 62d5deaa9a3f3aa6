"""The serving path uses the cache levers: `prefixcache serve` aligns and warms every
agent's prefix under each tenant's salt at start (answering meanwhile), warms a new
tenant at its first request, and prefetches the agents a caller says come next."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefixcache import LocalEngine

from .service_process import ServiceProcess

pytestmark = pytest.mark.integration


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wait_warm(proc: ServiceProcess, timeout: float = 240) -> tuple[str, float]:
    """Poll /ready until the warm-up is over; (its progress line, seconds waited). /ready
    answers within its probe deadline (a unit test checks it); the client allows more
    because on 2 busy cores the service itself can be slow to be scheduled."""
    started = time.monotonic()
    seen: dict[str, Any] = {}
    while time.monotonic() - started < timeout:
        seen = httpx.get(f"{proc.url}/ready", timeout=30).json()
        if str(seen.get("warming", "")).startswith("warm "):
            return str(seen["warming"]), time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"the warm-up did not finish: {seen}")


def chat(proc: ServiceProcess, key: str, agent: str, **extra: Any) -> dict[str, Any]:
    answer = httpx.post(
        f"{proc.url}/chat",
        headers=auth(key),
        timeout=180,
        json={"message": "Start.", "agent_type": agent, "max_tokens": 2, **extra},
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def engine_idle(engine: LocalEngine, timeout: float = 120) -> None:
    """Wait until the engine runs and queues nothing (background prefills are over)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = httpx.get(f"{engine.base_url}/metrics", timeout=10).text
        busy = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(("vllm:num_requests_running", "vllm:num_requests_waiting"))
        )
        if busy == 0:
            return
        time.sleep(0.3)
    raise AssertionError("the engine stayed busy")


def first_and_repeat(
    proc: ServiceProcess, key: str, agent: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The agent's first request of a new session, then another new session's: when the
    agent's prefix was warm before the first, both find the same cached tokens (only
    the dynamic suffix differs); when it was cold, the first finds less."""
    return chat(proc, key, agent)["cache"], chat(proc, key, agent)["cache"]


def test_warm_on_start_for_every_tenant_then_a_new_tenant(
    engine: LocalEngine, block_size: int, tmp_path: Path
) -> None:
    proc = ServiceProcess(
        tmp_path, engine.base_url, rate_limit_per_minute=0, warm="{enabled: true}"
    )
    keys = {t: proc.key(t, "u") for t in ("warm-a", "warm-b")}
    proc.start()
    try:
        # the service answers while it warms
        early = httpx.get(f"{proc.url}/ready", timeout=30)
        assert early.status_code in (200, 503) and "warming" in early.json()
        progress, waited = wait_warm(proc)
        done, total = progress.split()[1].split("/")[:2]
        assert done == total == str(2 * 22), progress  # 22 agents x 2 tenants, none cold
        firsts = {}
        for tenant, key in keys.items():
            first, repeat = first_and_repeat(proc, key, "code-skeptic")
            # the tenant's very first request of the agent finds its whole prefix cached
            assert first["cached_tokens"] == repeat["cached_tokens"], (tenant, first, repeat)
            assert first["cached_tokens"] % block_size == 0 and first["cached_tokens"] >= 512
            firsts[tenant] = first
        # a tenant with no key at start is warmed from its first request on
        late = proc.key("warm-c", "u")
        cold = chat(proc, late, "backend-engineer")["cache"]
        later, _ = wait_warm(proc)  # the new tenant's warm-up, in the background
        assert later == "warm 22/22", later
        first, repeat = first_and_repeat(proc, late, "code-skeptic")
        assert first["cached_tokens"] == repeat["cached_tokens"] >= 512, (first, repeat)
        print(
            f"\nwarm-up at start: {progress} in {waited:.1f} s (answering meanwhile); first "
            "/chat of an agent per tenant: "
            + ", ".join(f"{t} {f['cached_tokens']}/{f['prompt_tokens']}" for t, f in firsts.items())
            + f"; a tenant created later: its first request {cold['cached_tokens']}, then "
            f"{first['cached_tokens']}/{first['prompt_tokens']}"
        )
    finally:
        proc.stop()


def test_the_next_agent_hint_prefetches_its_prefix(engine: LocalEngine, tmp_path: Path) -> None:
    """Warm-up leaves everything cold here (a tiny KV share), so only the hint can warm."""
    proc = ServiceProcess(
        tmp_path,
        engine.base_url,
        rate_limit_per_minute=0,
        warm="{enabled: true, kv_fraction: 0.0001}",
    )
    key = proc.key("hint", "u")
    proc.start()
    try:
        progress, _ = wait_warm(proc)
        assert progress.startswith("warm 0/0"), progress  # all left cold
        # without a hint, an agent's first request finds less than its repeat
        unhinted, again = first_and_repeat(proc, key, "orchestrator")
        assert unhinted["cached_tokens"] < again["cached_tokens"]
        chat(proc, key, "prd-writer", next_agent_types=["code-skeptic"])
        time.sleep(1)
        engine_idle(engine)  # the prefetch runs after the answer
        hinted, repeat = first_and_repeat(proc, key, "code-skeptic")
        assert hinted["cached_tokens"] == repeat["cached_tokens"], (hinted, repeat)
        unknown = httpx.post(
            f"{proc.url}/chat",
            headers=auth(key),
            timeout=60,
            json={"message": "x", "next_agent_types": ["no-such-agent"]},
        )
        assert unknown.status_code == 422
    finally:
        proc.stop()
