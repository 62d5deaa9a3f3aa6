"""Fairness between tenants: one tenant floods the service with every request its keys
may have in flight, while another tenant's single client measures its /chat latency.

Run (against a running vLLM server; loopback only):
    .venv/bin/python benchmarks/bench_fairness.py --base-url http://127.0.0.1:8000

Two services are started side by side on the same engine (temporary databases, their own
ports, stopped by PID): `shared`, where a tenant may hold every engine slot
(tenant_share 1.0), and `fair`, the default share (0.5). For each: tenant B's p50/p95
latency alone, then under tenant A's flood (`--flood-keys` keys x the per-key limit,
each request asking `--flood-tokens` tokens). Target: B's loaded p50 within 2x of its
unloaded p50 with the default settings. A benchmark: it prints figures and asserts
nothing.
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


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round((len(ordered) - 1) * q / 100))]


async def measure(url: str, key: str, n: int, tokens: int) -> list[float]:
    """B's client: ``n`` sequential /chat turns in one session."""
    out = []
    async with httpx.AsyncClient(timeout=300) as http:
        for i in range(n):
            started = time.perf_counter()
            answer = await http.post(
                f"{url}/chat",
                headers={"Authorization": f"Bearer {key}"},
                json={
                    "message": f"Quick check {i}.",
                    "session_id": "b-probe",
                    "agent_type": "code-reviewer",
                    "max_tokens": tokens,
                },
            )
            answer.raise_for_status()
            out.append(time.perf_counter() - started)
    return out


async def flood(
    url: str, keys: list[str], per_key: int, tokens: int, stop: asyncio.Event
) -> dict[int, int]:
    codes: dict[int, int] = {}

    async def one(key: str, n: int) -> None:
        async with httpx.AsyncClient(timeout=300) as http:
            turn = 0
            while not stop.is_set():
                answer = await http.post(
                    f"{url}/chat",
                    headers={"Authorization": f"Bearer {key}"},
                    json={
                        "message": f"Write a long essay, part {turn}.",
                        "session_id": f"flood-{n}",
                        "max_tokens": tokens,
                        "agent_type": "frontend-engineer",
                    },
                )
                codes[answer.status_code] = codes.get(answer.status_code, 0) + 1
                if answer.status_code == 429:
                    await asyncio.sleep(0.2)
                turn += 1

    tasks = [
        asyncio.create_task(one(k, i * per_key + j))
        for i, k in enumerate(keys)
        for j in range(per_key)
    ]
    await stop.wait()
    await asyncio.gather(*tasks)
    return codes


async def scenario(
    proc: ServiceProcess, keys: list[str], b_key: str, args: argparse.Namespace
) -> tuple[list[float], list[float], dict[int, int]]:
    await measure(proc.url, b_key, 2, args.probe_tokens)  # warm B's prefix
    alone = await measure(proc.url, b_key, args.probes, args.probe_tokens)
    stop = asyncio.Event()
    flooding = asyncio.create_task(flood(proc.url, keys, args.per_key, args.flood_tokens, stop))
    await asyncio.sleep(3)  # let the flood fill its share
    loaded = await measure(proc.url, b_key, args.probes, args.probe_tokens)
    stop.set()
    codes = await flooding
    return alone, loaded, codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--probes", type=int, default=12)
    parser.add_argument("--probe-tokens", type=int, default=8)
    parser.add_argument("--flood-keys", type=int, default=4)
    parser.add_argument(
        "--per-key", type=int, default=4, help="the per-key limit (service.max_concurrent_per_key)"
    )
    parser.add_argument("--flood-tokens", type=int, default=64)
    parser.add_argument("--max-inflight", type=int, default=8)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, share in (("shared (tenant_share 1.0)", 1.0), ("fair (tenant_share 0.5)", 0.5)):
            folder = Path(tmp) / name.split()[0]
            folder.mkdir()
            proc = ServiceProcess(
                folder,
                args.base_url,
                rate_limit_per_minute=0,
                max_concurrent_per_key=args.per_key,
                max_inflight=args.max_inflight,
                tenant_share=share,
            )
            keys = [proc.key("flooder", f"k{i}") for i in range(args.flood_keys)]
            b_key = proc.key("quiet", "b")
            proc.start()
            try:
                alone, loaded, codes = asyncio.run(scenario(proc, keys, b_key, args))
            finally:
                proc.stop()
            rows.append((name, alone, loaded, codes))
    print(
        f"\nflood: {args.flood_keys} keys x {args.per_key} in flight, {args.flood_tokens} tokens "
        f"each; max_inflight {args.max_inflight}; tenant B: {args.probes} sequential /chat, "
        f"{args.probe_tokens} tokens"
    )
    print(
        "| settings | B alone p50 / p95 s | B under flood p50 / p95 s | p50 ratio | flood answers |"
    )
    print("|---|---|---|---|---|")
    for name, alone, loaded, codes in rows:
        ratio = statistics.median(loaded) / statistics.median(alone)
        print(
            f"| {name} | {statistics.median(alone):.3f} / {pct(alone, 95):.3f} | "
            f"{statistics.median(loaded):.3f} / {pct(loaded, 95):.3f} | {ratio:.2f}x | "
            f"{', '.join(f'{c}: {n}' for c, n in sorted(codes.items()))} |"
        )


if __name__ == "__main__":
    main()
