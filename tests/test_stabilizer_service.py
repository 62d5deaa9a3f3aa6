"""The gateway's stabilizer in the service, without an engine: modes and the header,
the cache model behind the predictions, /stats per family (SQLite and PostgreSQL), and
the unmodified apps it is measured on."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import httpx
import pytest

from prefixcache import PromptLibrary
from prefixcache.bench.apps import APPS, STATIC_CHARS, static_text
from prefixcache.service.auth import Principal
from prefixcache.service.db import CacheRecord, create_engine, session_factory
from prefixcache.service.stabilizer import CacheModel, GatewayStabilizer
from prefixcache.settings import StabilizeSettings
from prefixcache.traces.stabilize import Stabilizer

from .service_support import Client

STATIC = "\n".join(f"Rule {i}: check the inputs, the outputs and the logs." for i in range(40))


def stabilizer(**settings: object) -> GatewayStabilizer:
    return GatewayStabilizer(
        StabilizeSettings.model_validate(settings), httpx.AsyncClient(), "http://x", "m"
    )


def body(n: int) -> dict[str, object]:
    return {
        "messages": [
            {"role": "system", "content": f"Time: 10:00:0{n}\n{STATIC}"},
            {"role": "user", "content": "hi"},
        ]
    }


def test_modes_per_tenant_and_the_header_only_lowers_them() -> None:
    s = stabilizer(mode="shadow", tenants={"acme": "on", "quiet": "off"})
    acme, other, quiet = (Principal("k", t, "u", None) for t in ("acme", "other", "quiet"))
    assert s.apply(quiet, body(0), None, None) == (body(0), None)
    s.apply(acme, body(0), None, None)
    sent, note = s.apply(acme, body(1), None, None)
    assert note is not None and note.applied and note.rewrite.header() == "lines=1; tools=unchanged"
    assert sent["messages"][0]["content"] == f"{STATIC}\nTime: 10:00:01"
    sent, note = s.apply(acme, body(2), "shadow", None)  # lowered for this request
    assert sent == body(2) and note is not None and not note.applied and note.rewrite.rewritten
    s.apply(other, body(0), "on", None)
    sent, note = s.apply(other, body(1), "on", None)  # cannot raise shadow to on
    assert sent == body(1) and note is not None and note.mode == "shadow"
    assert note.shapes_json() == json.dumps(["Time: #:#:#"])


def test_the_cache_model_is_block_exact_and_never_the_last_token() -> None:
    model = CacheModel(block_size=4, max_blocks=100)
    first = list(range(10))
    assert model.request(first, "a") == 0
    assert model.request(first, "a") == 8  # two full blocks; the last token recomputed
    assert model.request(list(range(8)), "a") == 4  # 8 tokens: the second block holds the last
    assert model.request(first, "b") == 0  # another salt shares nothing
    assert model.request([*range(6), 99, 98, 97], "a") == 4
    small = CacheModel(block_size=4, max_blocks=2)
    small.request(list(range(12)), None)
    assert small.request(list(range(12)), None) == 0  # the first blocks were dropped (LRU)


def _records(url: str, rows: list[dict[str, object]]) -> None:
    async def go() -> None:
        engine = create_engine(url)
        try:
            async with session_factory(engine)() as db:
                for row in rows:
                    db.add(
                        CacheRecord(
                            user_id=f"{row['tenant_id']}/u",
                            endpoint="gateway",
                            agent_type="unlabelled",
                            tier="unknown",
                            ttft=0.1,
                            **row,
                        )
                    )
                await db.commit()
        finally:
            await engine.dispose()

    asyncio.run(go())


def test_stats_show_each_family_observed_and_predicted(client: Client) -> None:
    test_client, headers, url = client
    common = {"tenant_id": "acme", "family": "timestamp-app", "prompt_tokens": 1000}
    _records(
        url,
        [
            {
                **common,
                "cached_tokens": 0,
                "stabilize": "shadow",
                "rewritten": False,
                "predicted_original": 0,
                "predicted_stabilized": 0,
            },
            {
                **common,
                "cached_tokens": 100,
                "stabilize": "shadow",
                "rewritten": False,
                "predicted_original": 100,
                "predicted_stabilized": 900,
                "moved_shapes": json.dumps(["Time: #:#:#"]),
            },
            {
                **common,
                "cached_tokens": 900,
                "stabilize": "on",
                "rewritten": True,
                "predicted_original": 100,
                "predicted_stabilized": 900,
            },
            {**common, "tenant_id": "other", "cached_tokens": 0, "moved_shapes": '["secret"]'},
            {"tenant_id": "acme", "prompt_tokens": 10, "cached_tokens": 0},  # not a gateway family
        ],
    )
    answer = test_client.get("/stats", headers=headers)
    assert answer.status_code == 200
    (family,) = answer.json()["families"]
    assert family == {
        "family": "timestamp-app",
        "requests": 3,
        "rewritten": 1,
        "hit_rate": pytest.approx(1000 / 3000),
        "predicted_hit_rate": pytest.approx(200 / 3000),
        "stabilized_hit_rate": pytest.approx(1800 / 3000),
        "moves": ["Time: #:#:#"],
    }


def test_each_app_fixed_by_hand_has_the_same_lines() -> None:
    static = static_text(PromptLibrary())
    assert len(static) >= STATIC_CHARS - 200
    for app in APPS:
        seen = set()
        for n in range(4):
            written, fixed = app.request(n, static), app.request(n, static, fixed=True)
            assert (
                len(written.messages) == len(fixed.messages) == (2 * n + 2 if app.multi_turn else 2)
            )
            a, b = written.messages[0]["content"], fixed.messages[0]["content"]
            assert Counter(x.rstrip("\r") for x in a.split("\n")) == Counter(b.split("\n"))
            assert written.messages[1:] == fixed.messages[1:]
            seen.add(a)
        assert (len(seen) == 1) == app.stable, app.name


def test_the_stabilizer_gives_each_app_one_static_head() -> None:
    """From its second request on, every app's stabilized system prompt keeps one static
    head: only the lines after it change."""
    static = static_text(PromptLibrary())
    for app in APPS:
        s = Stabilizer()
        texts = [
            s.process("t", r.messages, r.tools).messages[0]["content"]
            for r in (app.request(n, static) for n in range(5))
        ]
        later = [t.replace("\r", "") for t in texts[1:]]
        head = later[0][: len(static)]
        assert all(t.startswith(head) for t in later), app.name
        assert static in head or static[:2000] in head, app.name
