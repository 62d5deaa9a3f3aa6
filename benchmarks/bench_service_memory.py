"""The service's memory and its figures' cost after many requests: 100,000 synthetic
requests go through the service's own recorder (the Prometheus figures and the
aggregates) and its batched cache-record writer into a real SQLite database, then
/stats and /dashboard are timed. No engine is needed (vLLM is a closed port).

Run:
    .venv/bin/python benchmarks/bench_service_memory.py [--requests 100000]

Prints the process's resident memory after 10% and after 100% of the requests (bounded
memory: the two are close), and the time of /stats and /dashboard over all the records.
A benchmark: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fastapi.testclient import TestClient
from tests.service_support import make_key, write_config

from prefixcache import load_settings
from prefixcache.llm.models import LLMResponse
from prefixcache.service.app import create_app
from prefixcache.service.db import CacheRecord

AGENTS = ["frontend-engineer", "backend-engineer", "code-reviewer", "orchestrator", "prd-writer"]


def rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def response(i: int) -> LLMResponse:
    return LLMResponse(
        "ok",
        {
            "prompt_tokens": 4000 + i % 97,
            "completion_tokens": 2,
            "total_tokens": 4002 + i % 97,
            "cached_tokens": 3968,
        },
        {
            "cached_tokens": 3968,
            "cache_hit_rate": 0.99,
            "ttft": 0.05 + (i % 50) / 1000,
            "provider": "vllm",
            "model": "m",
            "served_model": "m",
            "requested_model": "m",
            "request_id": f"r{i}",
        },
        0.2,
        "length",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(write_config(Path(tmp), rate_limit_per_minute=0))
        key = make_key(settings.service.resolved_database_url(), "acme", "alice")
        with TestClient(create_app(settings)) as client:
            state = client.app.state.service  # type: ignore[attr-defined]
            marks: list[tuple[int, float]] = [(0, rss_mib())]
            started = time.perf_counter()

            async def feed(lo: int, hi: int) -> None:
                for i in range(lo, hi):
                    res = response(i)
                    agent = AGENTS[i % len(AGENTS)]
                    state.recorder.record(res, agent_type=agent)
                    state.pending_records.append(
                        CacheRecord(
                            tenant_id="acme",
                            user_id="acme/alice",
                            endpoint="chat",
                            agent_type=agent,
                            tier="TIER_1_DEFAULT",
                            model="m",
                            prompt_tokens=res.prompt_tokens,
                            cached_tokens=res.cached_tokens,
                            ttft=res.ttft,
                            processing_time=res.processing_time,
                        )
                    )
                    if len(state.pending_records) >= 2000:
                        await state.flush_records()
                await state.flush_records()

            step = args.requests // 10
            for n in range(10):
                client.portal.call(feed, n * step, (n + 1) * step)  # type: ignore[union-attr]
                marks.append(((n + 1) * step, rss_mib()))
            fed = time.perf_counter() - started
            auth = {"Authorization": f"Bearer {key}"}
            timings = {}
            for path in ("/stats", "/dashboard?refresh=0"):
                client.get(path, headers=auth)  # warm
                t0 = time.perf_counter()
                for _ in range(5):
                    answer = client.get(path, headers=auth)
                    assert answer.status_code == 200, answer.text[:300]
                timings[path] = (time.perf_counter() - t0) / 5
            stats = client.get("/stats", headers=auth).json()
    print(
        f"\n{args.requests:,} synthetic requests through the recorder and the record writer "
        f"in {fed:.1f} s"
    )
    print("| requests | resident memory MiB |")
    print("|---|---|")
    for n, mib in marks:
        print(f"| {n:,} | {mib:.1f} |")
    print(
        f"recorder keeps {len(state.recorder.records):,} whole requests; /stats counts "
        f"{stats['requests']:,}"
    )
    for path, seconds in timings.items():
        print(f"{path}: {seconds * 1000:.1f} ms over {args.requests:,} records")


if __name__ == "__main__":
    main()
