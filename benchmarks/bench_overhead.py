"""Overhead of get_optimized_prompt with every parameter set, side by side with two
yardsticks measured in the same run:

- a pure-string baseline: the same layout built with one f-string from values that are
  already clean (no validation, no normalisation): the floor for this layout in Python;
- an older commit of this project (``--against REV``, default 220b17e, the last commit
  before the hardening of the inputs), extracted with ``git archive`` into a temporary
  folder and measured in a subprocess with the same interpreter.

Run: .venv/bin/python benchmarks/bench_overhead.py [--calls N] [--against REV|none]
Prints figures; it is a benchmark, not a test, so it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

from prefixcache import get_base_prompt_for_agent, get_optimized_prompt

TARGET_US = 20.0
TARGET_RATIO = 1.1  # the bound against the older commit
ROOT = Path(__file__).resolve().parent.parent
AGENT = "frontend-engineer"
CALL: dict[str, Any] = {
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
}


def per_call_us(fn: Callable[[], object], calls: int, batch: int) -> list[float]:
    fn()  # the first call renders and memoises the prefix
    out = []
    for _ in range(calls // batch):
        start = time.perf_counter_ns()
        for _ in range(batch):
            fn()
        out.append((time.perf_counter_ns() - start) / batch / 1000)
    return out


def library_call() -> Callable[[], object]:
    base = get_base_prompt_for_agent(AGENT)
    return lambda: get_optimized_prompt(base, agent_type=AGENT, **CALL)


def string_baseline() -> Callable[[], object]:
    """The same text, from clean values, with no checks: what the layout costs at least."""
    prefix = get_optimized_prompt(agent_type=AGENT).split("\n---\n\n## Dynamic Context")[0]
    tools = sorted(set(CALL["available_tools"]))
    params = sorted(CALL["additional_params"].items())
    context = CALL["recent_context"]

    def build() -> str:
        lines = "".join(f"- {k}: {v}\n" for k, v in params)
        quoted = "\n".join("> " + line for line in context)
        return (
            f"{prefix}\n---\n\n## Dynamic Context\n\n**User:** {CALL['user_name']}\n"
            f"**User Role:** {CALL['user_role']}\n**Available Tools:** {', '.join(tools)}\n"
            f"**Additional Parameters:**\n{lines}**Session:** {CALL['session_id']}\n"
            f"**Recent Context:**\n{quoted}\n\n"
        )

    return build


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(samples),
        "p95": statistics.quantiles(samples, n=20)[-1],
        "min": min(samples),
    }


def older_commit(rev: str, calls: int, batch: int) -> dict[str, float] | str:
    """Measure ``rev``'s get_optimized_prompt in a subprocess; a reason string if it can't."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev, "src"], capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"not measured: git archive {rev} failed ({exc})"
    with tempfile.TemporaryDirectory(prefix="prefixcache-bench-") as tmp:
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        env = {**os.environ, "PYTHONPATH": str(Path(tmp) / "src")}
        done = subprocess.run(
            [sys.executable, __file__, "--calls", str(calls), "--batch", str(batch), "--json"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp,
            check=False,
        )
    if done.returncode != 0:
        return f"not measured: {done.stderr.strip().splitlines()[-1:]}"
    return dict(json.loads(done.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--against", default="220b17e", help="older commit, or 'none'")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    ours = summary(per_call_us(library_call(), args.calls, args.batch))
    if args.json:  # the subprocess measuring an older commit
        print(json.dumps(ours))
        return
    floor = summary(per_call_us(string_baseline(), args.calls, args.batch))
    print(
        f"get_optimized_prompt, all parameters set, {args.calls} calls in batches of {args.batch}"
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    rows: list[tuple[str, dict[str, float] | str]] = [
        ("this tree", ours),
        ("pure-string baseline", floor),
    ]
    if args.against != "none":
        rows.append((f"commit {args.against}", older_commit(args.against, args.calls, args.batch)))
    for name, figures in rows:
        if isinstance(figures, str):
            print(f"  {name:<22} {figures}")
        else:
            print(
                f"  {name:<22} median {figures['median']:6.2f} us/call, p95 {figures['p95']:6.2f}, "
                f"min {figures['min']:6.2f}"
            )
    print(f"ratio to the pure-string baseline: {ours['median'] / floor['median']:.2f}x")
    older = rows[-1][1] if args.against != "none" else None
    if isinstance(older, dict):
        ratio = ours["median"] / older["median"]
        verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
        print(
            f"ratio to commit {args.against}: {ratio:.2f}x (target <= {TARGET_RATIO}x: {verdict})"
        )
    print(
        f"target median <= {TARGET_US:.0f} us: {'met' if ours['median'] <= TARGET_US else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
