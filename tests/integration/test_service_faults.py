"""The engine stopped under the running service, then started again: 503s (not 500s,
not hangs) while it is down, turns kept and marked failed, and service without a restart
once it is back. Stops the shared engine, so it runs after every other test."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from prefixcache import LocalEngine

from .service_process import ServiceProcess
from .test_cli_live import cli
from .test_warm_live import first_and_repeat, wait_warm
from .token_ledger import LEDGER

pytestmark = [pytest.mark.integration, pytest.mark.runs_last]


def test_engine_stopped_mid_run_then_back(
    engine: LocalEngine, engine_config_file: Path, service: ServiceProcess, tmp_path: Path
) -> None:
    # beside it, a service that warms: it must warm the restarted engine by itself
    warming = ServiceProcess(
        tmp_path, engine.base_url, rate_limit_per_minute=0, warm="{enabled: true}"
    )
    warm_key = warming.key("rewarm", "u")
    warming.start()
    try:
        wait_warm(warming)
        _stopped_then_back(engine, engine_config_file, service)
        assert httpx.get(f"{warming.url}/ready", timeout=30).json()["warming"] != "off"
        progress, waited = wait_warm(warming)  # noticed the engine came back, warmed again
        first, repeat = first_and_repeat(warming, warm_key, "code-skeptic")
        assert first["cached_tokens"] == repeat["cached_tokens"] >= 512, (first, repeat)
        print(f"re-warmed after the engine restart: {progress} in {waited:.1f} s")
    finally:
        warming.stop()


def _stopped_then_back(engine: LocalEngine, config: Path, service: ServiceProcess) -> None:
    key = service.key("faults", "u")
    headers = {"Authorization": f"Bearer {key}"}
    codes: list[int] = []

    async def client(number: int) -> None:
        async with httpx.AsyncClient(timeout=120) as http:
            for turn in range(6):
                answer = await http.post(
                    f"{service.url}/chat",
                    headers=headers,
                    json={
                        "message": f"turn {turn}",
                        "session_id": f"fault-{number}",
                        "max_tokens": 24,
                    },
                )
                codes.append(answer.status_code)
                if answer.status_code == 503:
                    assert answer.headers["retry-after"] == "5"
                    assert answer.json()["error"]["code"] == "llm_unavailable"

    async def run() -> None:
        load = asyncio.gather(*(client(n) for n in range(4)))
        while len(codes) < 4:  # some turns answered, others in flight
            await asyncio.sleep(0.05)
        await asyncio.to_thread(LEDGER.account)  # what it prefilled before the stop
        await asyncio.to_thread(engine.stop)
        await load

    started = time.monotonic()
    asyncio.run(asyncio.wait_for(run(), timeout=240))
    assert set(codes) <= {200, 503}, codes  # never a 500, never a hang
    assert 503 in codes and codes.count(200) >= 4
    with sqlite3.connect(service.db) as db:
        failed = db.execute(
            "select count(*) from messages where status = 'failed' and session_id like '%/fault-%'"
        ).fetchone()[0]
    assert failed == codes.count(503)  # every refused turn is kept, marked failed
    down = httpx.post(
        f"{service.url}/v1/chat/completions",
        headers=headers,
        timeout=60,
        json={"messages": [{"role": "user", "content": "x"}], "max_tokens": 1},
    )
    assert down.status_code == 503
    assert httpx.get(f"{service.url}/ready", timeout=30).status_code == 503

    # back as a user brings it back: `prefixcache engine start`, same config and port (the
    # service is not restarted); the session's teardown stops it by its recorded PID
    back = cli("engine", "start", "--config", str(config))
    assert back.returncode == 0, back.stderr[-2000:]
    assert engine.healthy()
    again = httpx.post(
        f"{service.url}/chat",
        headers=headers,
        timeout=120,
        json={"message": "back?", "session_id": "fault-0", "max_tokens": 2},
    )
    assert again.status_code == 200, again.text
    assert httpx.get(f"{service.url}/ready", timeout=30).status_code == 200
    print(
        f"\nfaults: {codes.count(200)} answered, {codes.count(503)} x 503 while down, "
        f"recovered without a service restart ({time.monotonic() - started:.0f} s)"
    )
