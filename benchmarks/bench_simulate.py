"""Validate `prefixcache simulate` against the live engine: the benchmark's own traces,
replayed through the simulator, beside the cached tokens vLLM reported for each request.

Run: .venv/bin/python benchmarks/bench_simulate.py [--out results/simulate-validation]

Three live runs (each starts and stops its own engines, by PID):

1. **room for everything**: `prefixcache bench` (single, workflow and multiturn scenarios;
   naive, reference, optimized, aligned and warmed arms) on the default 4 GiB of KV
   cache. Target: predicted == measured on every request.
2. **eviction**: the same plus the no-reuse arm on 1 GiB of KV cache (the smallest the
   CPU backend takes), so that blocks are evicted. Target: hit rate within 2 points.
3. **two-replica fleet**: `prefixcache fleet-bench --replicas 2`; each policy's run
   replayed through a two-replica simulation with the matching policy. Target: fleet hit
   rate within 2 points.

The engine's block size and KV blocks are read from its /metrics (run 1); 1 GiB and the
fleet's 2 GiB per replica are scaled from them. `--reuse DIR` re-analyses earlier runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from prefixcache.engine.embedded_model import embedded_model_dir
from prefixcache.settings import load_settings
from prefixcache.traces.records import TraceRecord, read_trace
from prefixcache.traces.render import pct
from prefixcache.traces.simulate import Policy, requests_from_trace, simulate, versus_measured
from prefixcache.traces.tokenize import LocalTokenizer, tokenize_trace

CLI = str(Path(sys.executable).parent / "prefixcache")
SCENARIOS = ["single", "workflow", "multiturn"]
ARMS = "naive,reference,optimized,aligned,warmed"
FLEET_GIB = 2
FLEET_SESSIONS = 8  # fleet-bench's concurrent sessions
#: fleet-bench run name -> the simulator's policy
FLEET_POLICIES = {
    "round_robin": Policy.ROUND_ROBIN,
    "cache_aware": Policy.CACHE_AWARE,
    "consistent_hash": Policy.SESSION_HASH,
    "sticky_least_loaded": Policy.STICKY_LEAST_LOADED,
}


def run(args: Sequence[str], kv_gib: int | None = None) -> None:
    env = dict(os.environ)
    if kv_gib is not None:
        env["PREFIXCACHE_LLM__VLLM__CPU_KVCACHE_SPACE_GIB"] = str(kv_gib)
    print("$", " ".join(["prefixcache", *args]), f"(KV {kv_gib} GiB)" if kv_gib else "", flush=True)
    subprocess.run([CLI, *args], env=env, check=True, stdout=subprocess.DEVNULL)


def compare(
    name: str,
    records: list[TraceRecord],
    tokens: list[list[int]],
    block: int,
    blocks: int,
    *,
    replicas: int = 1,
    policy: Policy = Policy.ROUND_ROBIN,
    concurrency: int = 1,
) -> dict[str, object]:
    report = simulate(
        requests_from_trace(records, tokens),
        block_size=block,
        num_blocks=blocks,
        replicas=replicas,
        policy=policy,
        concurrency=concurrency,
    )
    versus = versus_measured(report, [r.cached_tokens for r in records], limit=5)
    if versus is None:
        raise SystemExit(f"{name}: the trace has no measured cached tokens to compare with")
    row = {
        "run": name,
        "requests": len(records),
        "kv_blocks": blocks,
        "replicas": replicas,
        "policy": policy.value,
        "equal": versus.equal,
        "predicted": versus.predicted_hit_rate,
        "measured": versus.measured_hit_rate,
        "gap_points": versus.gap_points,
        "evictions": sum(report.evictions),
        "first_differences": [list(d) for d in versus.first_differences],
    }
    print(
        f"| {name} | {len(records)} | {blocks} x {replicas} | {versus.equal}/{versus.requests} | "
        f"{pct(versus.predicted_hit_rate)} | {pct(versus.measured_hit_rate)} | "
        f"{versus.gap_points:.2f} | {sum(report.evictions)} |",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("results/simulate-validation"))
    parser.add_argument("--reuse", action="store_true", help="Analyse the folders already there.")
    args = parser.parse_args()
    out: Path = args.out
    big, small, fleet = out / "kv4", out / "kv1", out / "fleet"
    if not args.reuse:
        base = ["bench", *(x for s in SCENARIOS for x in ("--scenario", s))]
        run([*base, "--arms", ARMS, "--out-dir", str(big)], kv_gib=4)
        run([*base, "--arms", "no-reuse," + ARMS, "--out-dir", str(small)], kv_gib=1)
        run(
            [
                "fleet-bench",
                "--replicas",
                "2",
                "--kv-space-gib",
                str(FLEET_GIB),
                "--out-dir",
                str(fleet),
            ]
        )
    settings = load_settings()
    tokenizer = LocalTokenizer(embedded_model_dir(settings.llm.vllm.model_cache_dir))
    env = json.loads((big / "results.json").read_text())["environment"]
    block, blocks_4 = int(env["block_size"]), int(env["kv_blocks"])
    per_gib = blocks_4 // 4
    print(
        f"\nblock size {block}; {blocks_4} KV blocks in 4 GiB ({per_gib} per GiB), "
        f"tokens from {tokenizer.name}\n"
    )
    print(
        "| run | requests | KV blocks x replicas | predicted == measured | predicted hit "
        "rate | measured | gap (points) | evictions (sim) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for name, folder, blocks in (
        ("room for everything (4 GiB)", big, blocks_4),
        ("eviction (1 GiB)", small, per_gib),
    ):
        records = read_trace(folder / "trace.jsonl")
        tokens, _ = tokenize_trace(records, tokenizer)
        rows.append(compare(name, records, tokens, block, blocks))
    fleet_records = read_trace(fleet / "trace.jsonl")
    for run_name, policy in FLEET_POLICIES.items():
        records = [r for r in fleet_records if (r.labels or {}).get("run") == run_name]
        if not records:
            continue
        tokens, _ = tokenize_trace(records, tokenizer)
        rows.append(
            compare(
                f"fleet {run_name}",
                records,
                tokens,
                block,
                per_gib * FLEET_GIB,
                replicas=2,
                policy=policy,
                concurrency=FLEET_SESSIONS,
            )
        )
    (out / "validation.json").write_text(json.dumps(rows, indent=2) + "\n")
    exact = rows[0]["equal"] == rows[0]["requests"]
    within = all(float(r["gap_points"]) <= 2.0 for r in rows[1:])  # type: ignore[arg-type]
    print(
        f"\nno eviction, every request equal: {'met' if exact else 'NOT met'}; "
        f"eviction and fleet within 2 points: {'met' if within else 'NOT met'}"
    )
    print(f"written: {out / 'validation.json'}")


if __name__ == "__main__":
    main()
