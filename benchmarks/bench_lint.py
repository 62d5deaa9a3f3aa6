"""Lint time on pathological lines: it must grow linearly with the line's length.

Run: .venv/bin/python benchmarks/bench_lint.py
Prints the time per line at 20, 40 and 80 KB and the ratio 80 KB / 20 KB (linear: about
4; the quadratic rules this replaced gave about 16, and 50 s for one 80 KB line).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prefixcache.prompts.lint import lint_text

CASES: dict[str, Callable[[int], str]] = {
    "unclosed {{": lambda n: "{{" * (n // 2),
    "long word": lambda n: "a" * n + "!",
    "hex run + letter": lambda n: "0" * n + "g",
    "colons": lambda n: "1:" * (n // 2),
    "mixed prose": lambda n: ("Review the 2025 plan at 10:30 {{ x " * (n // 35))[:n],
}


def main() -> None:
    print(f"{'case':<18} {'20 KB s':>9} {'40 KB s':>9} {'80 KB s':>9} {'80/20':>7}")
    for name, make in CASES.items():
        times = []
        for size in (20_000, 40_000, 80_000):
            line = make(size) + "\n"
            started = time.perf_counter()
            lint_text(line, "bench.md")
            times.append(time.perf_counter() - started)
        ratio = times[2] / times[0] if times[0] else float("nan")
        print(f"{name:<18} {times[0]:>9.4f} {times[1]:>9.4f} {times[2]:>9.4f} {ratio:>7.1f}")


if __name__ == "__main__":
    main()
