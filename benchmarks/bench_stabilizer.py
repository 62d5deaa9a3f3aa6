"""Overhead of the gateway's stabilizer: learning from and rewriting one request, at
about 8,000-token system prompts (target: <= 1 ms p50 per request).

Run: .venv/bin/python benchmarks/bench_stabilizer.py [--requests N]
Prints figures; it is a benchmark, not a test, so it asserts nothing about time. The
prompts: this project's agent prompts (three of them joined, about 10,000 tokens of the
embedded model), a timestamp and a request id first, a one-tool-a-line list in a set's
order, a tools list in a set's order, a multi-turn history.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import statistics
import time
from typing import Any

from prefixcache import PromptLibrary
from prefixcache.traces.stabilize import Stabilizer

TARGET_MS = 1.0
TOOLS = ("search_docs", "read_file", "write_file", "run_tests", "open_ticket", "deploy")


def request(static: str, n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    order = sorted(TOOLS, key=lambda t: hashlib.sha1(f"{n}{t}".encode()).hexdigest())
    system = "\n".join(
        [
            f"Current time: 2026-11-30 14:03:{n % 60:02d}",
            f"X-Request-ID: {n:08x}",
            "You are the assistant of the bench app.",
            "Tools:",
            *(f"- {t}" for t in order),
            static,
        ]
    )
    history: list[dict[str, Any]] = []
    for turn in range(n % 4):
        history += [
            {"role": "user", "content": f"question {turn}"},
            {"role": "assistant", "content": f"answer {turn}"},
        ]
    tools = [
        {"type": "function", "function": {"name": t, "parameters": {"b": 1, "a": 2}}} for t in order
    ]
    return [
        {"role": "system", "content": system},
        *history,
        {"role": "user", "content": "go"},
    ], tools


def tokens(text: str) -> str:
    """The embedded model's token count of ``text`` (when the model is prepared)."""
    from prefixcache.engine.embedded_model import embedded_model_dir, is_prepared
    from prefixcache.settings import Settings
    from prefixcache.traces.tokenize import LocalTokenizer

    folder = embedded_model_dir(Settings().llm.vllm.model_cache_dir)
    if not is_prepared(folder):
        return "? (model not prepared)"
    [ids] = LocalTokenizer(folder).encode_chats([[{"role": "system", "content": text}]])
    return f"{len(ids):,}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument(
        "--agents",
        default="code-reviewer,frontend-engineer",
        help="agents whose static prompts make the app's static text (joined)",
    )
    args = parser.parse_args()
    library = PromptLibrary()
    static = "\n".join(library.compose_prompt(agent_type=a).prefix for a in args.agents.split(","))
    requests = [request(static, n) for n in range(args.requests)]
    stabilizer = Stabilizer()
    times: list[float] = []
    rewritten = 0
    for messages, tools in requests:
        started = time.perf_counter()
        out = stabilizer.process("tenant", messages, tools)
        times.append((time.perf_counter() - started) * 1000)
        rewritten += out.rewritten
    times = times[10:]  # the first requests warm Python's caches
    p50, p95 = statistics.median(times), sorted(times)[int(0.95 * len(times))]
    print(
        f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    system = str(requests[0][0][0]["content"])
    print(
        f"system prompt: {len(system):,} characters, {tokens(system)} tokens, "
        f"{system.count(chr(10)) + 1} lines; history {stabilizer.history}"
    )
    print(f"{len(requests)} requests, {rewritten} rewritten")
    print(
        f"learn + rewrite per request: p50 {p50:.3f} ms, p95 {p95:.3f} ms "
        f"(target p50 <= {TARGET_MS} ms: {'met' if p50 <= TARGET_MS else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
