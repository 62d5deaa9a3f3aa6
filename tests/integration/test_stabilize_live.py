"""The gateway's stabilizer on the real engine, through a real `prefixcache serve` and the
official `openai` client: two apps nobody rewrote (a timestamp first; a user's name first,
multi-turn), under three tenants (stabilizer off, shadow, on). Loopback only, bounded."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from prefixcache import PromptLibrary
from prefixcache.bench.apps import APPS_BY_NAME, static_text
from prefixcache.engine.local import LocalEngine

from .service_process import ServiceProcess

pytestmark = pytest.mark.integration

APPS = ("timestamp-first", "user-first")
REQUESTS = 4


@pytest.fixture(scope="module")
def stabilizing(
    engine: LocalEngine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    proc = ServiceProcess(
        tmp_path_factory.mktemp("stabilize"),
        engine.base_url,
        rate_limit_per_minute=0,
        record_prompts="true",
        stabilize="{mode: off, tenants: {t-shadow: shadow, t-on: on}}",
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def test_off_shadow_and_on_through_the_real_gateway(
    stabilizing: ServiceProcess, live_library: PromptLibrary
) -> None:
    static = static_text(live_library)
    keys = {mode: stabilizing.key(f"t-{mode}", "dev") for mode in ("off", "shadow", "on")}
    clients = {
        mode: openai.OpenAI(base_url=f"{stabilizing.url}/v1", api_key=key, max_retries=0)
        for mode, key in keys.items()
    }
    [model] = [m.id for m in clients["off"].models.list().data]
    seen: dict[tuple[str, str], list[tuple[int, int, str | None]]] = {}
    for n in range(REQUESTS):
        for name in APPS:
            request = APPS_BY_NAME[name].request(n, static)
            for mode, client in clients.items():
                raw = client.chat.completions.with_raw_response.create(
                    model=model,
                    messages=request.messages,  # type: ignore[arg-type]
                    max_tokens=2,
                    extra_headers={"X-Agent-Type": name},
                )
                usage = raw.parse().usage
                assert usage is not None and usage.prompt_tokens_details is not None
                seen.setdefault((name, mode), []).append(
                    (
                        usage.prompt_tokens,
                        usage.prompt_tokens_details.cached_tokens or 0,
                        raw.headers.get("x-prefixcache-stabilized"),
                    )
                )
    for name in APPS:
        off, shadow, on = (seen[(name, m)] for m in ("off", "shadow", "on"))
        # only `on` rewrites, and only from the family's second request
        assert [h for _, _, h in off + shadow] == [None] * (2 * REQUESTS)
        assert on[0][2] is None and all(h == "lines=1; tools=unchanged" for _, _, h in on[1:])
        # later requests: the static text cached through `on`, lost as written
        for (p_on, c_on, _), (p_off, c_off, _) in zip(on[2:], off[2:], strict=True):
            assert c_on > 0.85 * p_on, (name, c_on, p_on)
            assert c_off < 0.2 * p_off, (name, c_off, p_off)
    # shadow predicted, per family, what `on` measured (within 2 points)
    stats = _stats(stabilizing, keys["shadow"], len(APPS) * REQUESTS)
    for family in stats["families"]:
        on = seen[(family["family"], "on")]
        measured = sum(c for _, c, _ in on) / sum(p for p, _, _ in on)
        assert abs(family["stabilized_hit_rate"] - measured) <= 0.02, (family, measured)
        assert family["rewritten"] == 0 and family["moves"]  # shadow: predicted, not sent
        off = seen[(family["family"], "off")]
        assert (
            abs(
                family["predicted_hit_rate"] - sum(c for _, c, _ in off) / sum(p for p, _, _ in off)
            )
            <= 0.02
        )
    # the record keeps the rewrite: the prompt sent (the timestamp last), and what moved
    _stats(stabilizing, keys["on"], len(APPS) * REQUESTS)
    with sqlite3.connect(stabilizing.db) as db:
        rows = db.execute(
            "select family, rewritten, moved_lines, moved_shapes, prompt from cache_records "
            "where tenant_id = 't-on' order by id"
        ).fetchall()
    rewritten = [r for r in rows if r[0] == "timestamp-first" and r[1]]
    assert len(rewritten) == REQUESTS - 1 and all(r[2] == 1 for r in rewritten)
    assert json.loads(rewritten[0][3]) == ["Current time: #-#-# …"]
    system = json.loads(rewritten[0][4])[0]["content"]
    assert system.startswith("You are the assistant") and system.rstrip().splitlines()[
        -1
    ].startswith("Current time:")


def _stats(service: ServiceProcess, key: str, requests: int) -> dict[str, Any]:
    deadline = time.monotonic() + 30  # records are written after the predictions
    while True:
        stats = httpx.get(f"{service.url}/stats", headers={"Authorization": f"Bearer {key}"}).json()
        if sum(f["requests"] for f in stats["families"]) >= requests or time.monotonic() > deadline:
            return dict(stats)
        time.sleep(0.3)
