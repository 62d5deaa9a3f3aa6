"""Overhead of get_optimized_prompt with every parameter set (target: median <= 20 us/call).

Run: .venv/bin/python benchmarks/bench_overhead.py [--calls N]
Prints figures; it is a benchmark, not a test, so it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Any

from prefixcache import get_base_prompt_for_agent, get_optimized_prompt

TARGET_US = 20.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()

    base = get_base_prompt_for_agent("frontend-engineer")
    kwargs: dict[str, Any] = {
        "base_prompt_key": base,
        "session_id": "session-7f3a",
        "user_name": "Alice",
        "user_role": "developer",
        "available_tools": ["file_write", "file_read", "run_tests", "file_read"],
        "recent_context": ["user: make the button blue", "assistant: done", "user: and bigger"],
        "additional_params": {
            "tech_stack": "Vue.js + FastAPI",
            "project_name": "AutoBot",
            "max_complexity": 10,
        },
        "agent_type": "frontend-engineer",
    }
    get_optimized_prompt(**kwargs)  # first call renders and memoises the prefix
    per_call_us: list[float] = []
    for _ in range(args.calls // args.batch):
        start = time.perf_counter_ns()
        for _ in range(args.batch):
            get_optimized_prompt(**kwargs)
        per_call_us.append((time.perf_counter_ns() - start) / args.batch / 1000)
    median = statistics.median(per_call_us)
    p95 = statistics.quantiles(per_call_us, n=20)[-1]
    print(
        f"get_optimized_prompt, all parameters set, {args.calls} calls in batches of {args.batch}"
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    print(f"median {median:.2f} us/call, p95 {p95:.2f} us/call, min {min(per_call_us):.2f} us/call")
    print(f"target median <= {TARGET_US:.0f} us: {'met' if median <= TARGET_US else 'NOT met'}")


if __name__ == "__main__":
    main()
