"""The gateway's cost: the same requests sent to vLLM directly and through
`prefixcache serve`'s /v1/chat/completions, side by side in one run, at concurrency 20.

Run (against a running vLLM server; loopback only):
    .venv/bin/python benchmarks/bench_gateway.py --base-url http://127.0.0.1:8000

It starts the service itself (a temporary database, its own port), creates a key, sends
`--requests` requests per path in interleaved rounds (direct, gateway, direct, ...) so that
background load falls on both paths alike, stops the service by PID, and prints the added
latency (p50/p95 of gateway minus direct, per round) and the throughput ratio. Targets:
at most 5 ms added at p50, at least 95% of direct throughput. A benchmark: it prints
figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.service_process import ServiceProcess

from prefixcache import PromptLibrary, Settings


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round((len(ordered) - 1) * q / 100))]


async def round_of(
    url: str, headers: dict[str, str], bodies: list[dict[str, object]], concurrency: int
) -> tuple[list[float], float]:
    """Send ``bodies`` with ``concurrency`` workers; latencies and wall time."""
    latencies: list[float] = []
    queue: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def worker(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            started = time.perf_counter()
            answer = await http.post(url, json=body, headers=headers)
            answer.raise_for_status()
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        return latencies, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True, help="a running vLLM server")
    parser.add_argument("--requests", type=int, default=200, help="per path")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=1)
    args = parser.parse_args()

    library = PromptLibrary(Settings())
    agents = ["frontend-engineer", "backend-engineer", "code-reviewer", "prd-writer"]
    model = httpx.get(f"{args.base_url}/v1/models", timeout=30).json()["data"][0]["id"]
    bodies: list[dict[str, object]] = [
        {
            "model": model,
            "max_tokens": args.max_tokens,
            "messages": [
                {
                    "role": "system",
                    "content": library.compose_prompt(
                        agent_type=agents[i % len(agents)], session_id=f"g-{i % 7}"
                    ).text,
                },
                {"role": "user", "content": f"Task {i}: summarise the plan."},
            ],
        }
        for i in range(args.requests)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        service = ServiceProcess(
            Path(tmp), args.base_url, rate_limit_per_minute=0, cache_isolation="shared"
        )
        key = service.key("bench", "gateway")
        service.start()
        try:
            direct_url = f"{args.base_url}/v1/chat/completions"
            gateway_url = f"{service.url}/v1/chat/completions"
            auth = {"Authorization": f"Bearer {key}"}
            # warm both paths (and the prefixes) once, uncounted
            asyncio.run(round_of(direct_url, {}, bodies[:8], 8))
            asyncio.run(round_of(gateway_url, auth, bodies[:8], 8))
            per_round = max(1, args.requests // args.rounds)
            direct: list[float] = []
            gateway: list[float] = []
            walls = {"direct": 0.0, "gateway": 0.0}
            for r in range(args.rounds):
                chunk = bodies[r * per_round : (r + 1) * per_round]
                for name, url, headers in (
                    ("direct", direct_url, {}),
                    ("gateway", gateway_url, auth),
                ):
                    latencies, wall = asyncio.run(round_of(url, headers, chunk, args.concurrency))
                    (direct if name == "direct" else gateway).extend(latencies)
                    walls[name] += wall
        finally:
            service.stop()
    n = len(direct)
    added_p50 = (statistics.median(gateway) - statistics.median(direct)) * 1000
    added_p95 = (percentile(gateway, 95) - percentile(direct, 95)) * 1000
    ratio = (n / walls["gateway"]) / (n / walls["direct"])
    print(
        f"gateway overhead, {n} requests per path, concurrency {args.concurrency}, "
        f"max_tokens {args.max_tokens}, {args.rounds} interleaved rounds"
    )
    print(f"{'path':<8} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>7}")
    for name, values in (("direct", direct), ("gateway", gateway)):
        print(
            f"{name:<8} {statistics.median(values) * 1000:>8.1f} "
            f"{percentile(values, 95) * 1000:>8.1f} {n / walls[name]:>7.2f}"
        )
    print(
        f"added latency: p50 {added_p50:+.1f} ms, p95 {added_p95:+.1f} ms "
        f"(target: at most 5 ms at p50: {'met' if added_p50 <= 5 else 'NOT met'})"
    )
    print(
        f"throughput through the gateway: {ratio:.1%} of direct "
        f"(target: at least 95%: {'met' if ratio >= 0.95 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
