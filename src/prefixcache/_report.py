"""The benchmark report: the same tables for the terminal (rich) and Markdown, JSON with
every request, and PNG plots. Reads ``ArmRun``s; never reaches back into the runner."""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ._bench import ArmRun, BenchSettings, RequestResult, as_dict, describe_isolation
from ._metrics import percentile
from ._tiers import AgentTierMap
from ._workloads import SCENARIO_TITLES


@dataclass(frozen=True)
class Grid:
    """A titled table of strings, rendered to rich or Markdown."""

    title: str
    headers: Sequence[str]
    rows: Sequence[Sequence[str]]
    note: str = ""

    def rich(self) -> Table:
        table = Table(title=self.title, title_justify="left")
        for i, header in enumerate(self.headers):
            table.add_column(header, justify="left" if i == 0 else "right", no_wrap=i == 0)
        for row in self.rows:
            table.add_row(*row)
        return table

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.headers) + " |"]
        lines.append("|" + "|".join("---" for _ in self.headers) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines) + "\n"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(
    *,
    engine_version: str | None,
    model: str,
    block_size: int,
    device: str,
    base_url: str,
    settings: BenchSettings,
    command: str,
) -> dict[str, Any]:
    return {
        "engine": "vLLM",
        "engine_version": engine_version,
        "model": model,
        "block_size": block_size,
        "device": device,
        "base_url": base_url,
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "python": platform.python_version(),
        "command": command,
        "settings": {
            "scenarios": list(settings.scenarios),
            "arms": list(settings.arms),
            "repeat": settings.repeat,
            "max_tokens": settings.max_tokens,
            "sweep": list(settings.sweep),
            "sessions": settings.sessions,
            "requests_per_session": settings.requests_per_session,
            "run_id": settings.run_id,
        },
        "isolation": describe_isolation(),
    }


def _s(value: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _median(values: Iterable[float]) -> float | None:
    data = list(values)
    return statistics.median(data) if data else None


def _groups(runs: Sequence[ArmRun]) -> dict[tuple[str, int, str], list[ArmRun]]:
    out: dict[tuple[str, int, str], list[ArmRun]] = {}
    for run in runs:
        out.setdefault((run.scenario, run.max_tokens, run.arm), []).append(run)
    return out


def total_of(runs: Sequence[ArmRun]) -> float:
    """Median over repeats of the arm's time: sum of request times, or wall time (concurrent)."""
    values = [r.wall_time if r.scenario == "concurrent" else r.total_time for r in runs]
    return float(statistics.median(values))


def reuse_after_first(runs: Sequence[ArmRun]) -> tuple[float | None, int]:
    """min measured/predicted over requests after #1 that vLLM could reuse, and their count."""
    ratios = [
        x.reuse_reached
        for r in runs
        for x in r.tasks
        if x.index > 1 and x.reuse_reached is not None
    ]
    return (min(ratios) if ratios else None), len(ratios)


def summary_grid(runs: Sequence[ArmRun], default_max_tokens: int) -> Grid:
    groups = _groups(runs)
    rows = []
    for (scenario, max_tokens, arm), group in groups.items():
        if max_tokens != default_max_tokens:
            continue
        baseline = groups.get((scenario, max_tokens, "no-reuse"))
        total = total_of(group)
        speedup = total_of(baseline) / total if baseline else None
        tasks = [x for r in group for x in r.tasks]
        ttfts = [x.ttft for x in tasks if x.ttft is not None]
        reached, counted = reuse_after_first(group)
        hit = _median(h for r in group if (h := r.hit_rate) is not None)
        warm = _median(r.warmup_time for r in group) if arm == "warmed" else None
        rows.append(
            [
                SCENARIO_TITLES[scenario].split(",")[0],
                arm,
                str(len(group[0].tasks)),
                _s(total, "{:.1f}"),
                _s(warm, "{:.1f}"),
                _s(speedup, "{:.2f}x"),
                _pct(hit),
                _s(percentile(ttfts, 50)),
                _s(percentile(ttfts, 95)),
                "-" if reached is None else f"{reached * 100:.0f}% (n={counted})",
            ]
        )
    return Grid(
        f"Summary at max_tokens={default_max_tokens}",
        [
            "scenario",
            "arm",
            "requests",
            "total s",
            "warm-up s",
            "speedup vs no-reuse",
            "hit rate",
            "TTFT p50 s",
            "TTFT p95 s",
            "reuse reached (min)",
        ],
        rows,
        "total = sum of request times (concurrent: wall time); warm-up is reported apart and not in the total. "
        "reuse reached = measured / predicted cached tokens for requests after the first, where "
        "predicted = min(floor(shared/block)*block, floor((prompt-1)/block)*block) from /tokenize.",
    )


def per_request_grid(runs: Sequence[ArmRun], scenario: str, max_tokens: int) -> Grid | None:
    arms = [
        r for r in runs if r.scenario == scenario and r.max_tokens == max_tokens and r.repeat == 1
    ]
    if not arms or scenario == "concurrent":
        return None
    headers = ["#", "agent"]
    for run in arms:
        headers += [f"{run.arm} hit", f"{run.arm} TTFT s", f"{run.arm} time s", f"{run.arm} vs #1"]
    rows = []
    first_tasks = arms[0].tasks
    for i, task in enumerate(first_tasks):
        row = [str(task.index), task.agent_type]
        for run in arms:
            x = run.tasks[i]
            first = run.tasks[0].processing_time
            row += [
                _pct(x.hit_rate),
                _s(x.ttft),
                _s(x.processing_time),
                f"{first / x.processing_time:.2f}x",
            ]
        rows.append(row)
    return Grid(
        f"{SCENARIO_TITLES[scenario]}: per request (max_tokens={max_tokens})", headers, rows
    )


def tier_grid(runs: Sequence[ArmRun], tiers: AgentTierMap, max_tokens: int) -> Grid | None:
    rows = []
    for scenario in ("mixed", "workflow"):
        for arm in ("optimized", "warmed"):
            tasks = [
                x
                for r in runs
                if (r.scenario, r.arm, r.max_tokens) == (scenario, arm, max_tokens)
                for x in r.tasks
            ]
            for info in tiers.tiers():
                mine = [x for x in tasks if x.tier == info.tier.value]
                if not mine or any(x.cached_tokens is None for x in mine):
                    continue
                rate = sum(x.cached_tokens or 0 for x in mine) / sum(x.prompt_tokens for x in mine)
                lo, hi = info.expected_range
                verdict = "within" if lo <= rate <= hi else ("above" if rate > hi else "below")
                rows.append(
                    [
                        scenario,
                        arm,
                        info.tier.value,
                        str(len(mine)),
                        _pct(rate),
                        info.expected_hit_rate,
                        verdict,
                    ]
                )
    if not rows:
        return None
    return Grid(
        "Measured hit rate per tier vs the guide's expected range",
        ["scenario", "arm", "tier", "requests", "measured hit rate", "guide's range", "verdict"],
        rows,
        "hit rate = cached / prompt tokens over the tier's requests, first requests included.",
    )


def sweep_grid(runs: Sequence[ArmRun]) -> Grid | None:
    groups = _groups([r for r in runs if r.scenario == "single"])
    counts = sorted({m for (_, m, _) in groups})
    if len(counts) < 2:
        return None
    arms = [
        a for a in ("no-reuse", "naive", "optimized", "warmed") if any(k[2] == a for k in groups)
    ]
    rows = []
    for m in counts:
        base = groups.get(("single", m, "no-reuse"))
        row = [str(m)]
        for arm in arms:
            group = groups.get(("single", m, arm))
            if group is None:
                row += ["-", "-"]
                continue
            total = total_of(group)
            row += [_s(total, "{:.1f}"), _s(total_of(base) / total if base else None, "{:.2f}x")]
        rows.append(row)
    headers = ["max_tokens"]
    for arm in arms:
        headers += [f"{arm} total s", f"{arm} speedup"]
    return Grid(
        "Scenario 1, max_tokens sweep: where the gain goes as outputs grow",
        headers,
        rows,
        "Prefix caching removes prefill of reused tokens; decoding is unchanged, so the end-to-end "
        "speedup shrinks as max_tokens grows.",
    )


def throughput_grid(runs: Sequence[ArmRun]) -> Grid | None:
    concurrent = [r for r in runs if r.scenario == "concurrent"]
    if not concurrent:
        return None
    rows = []
    groups = _groups(concurrent)
    base_rps = None
    for (_, _, arm), group in groups.items():
        wall = total_of(group)
        tasks = group[0].tasks
        rps = len(tasks) / wall
        if arm == "no-reuse":
            base_rps = rps
        ttfts = [x.ttft for r in group for x in r.tasks if x.ttft is not None]
        prompt_tps = sum(x.prompt_tokens for x in tasks) / wall
        rows.append(
            [
                arm,
                str(len(tasks)),
                _s(wall, "{:.1f}"),
                _s(rps),
                _s(prompt_tps, "{:.0f}"),
                _s(percentile(ttfts, 50)),
                _s(percentile(ttfts, 95)),
                _s(rps / base_rps if base_rps else None, "{:.2f}x"),
            ]
        )
    return Grid(
        "Scenario 5, concurrent sessions: throughput",
        [
            "arm",
            "requests",
            "wall s",
            "requests/s",
            "prompt tokens/s",
            "TTFT p50 s",
            "TTFT p95 s",
            "req/s vs no-reuse",
        ],
        rows,
    )


def ttft_ratio_grid(runs: Sequence[ArmRun], max_tokens: int) -> Grid | None:
    rows = []
    for scenario in ("single", "mixed", "workflow"):
        cold = [
            x.ttft
            for r in runs
            if (r.scenario, r.arm, r.max_tokens) == (scenario, "no-reuse", max_tokens)
            for x in r.tasks
            if x.ttft is not None
        ]
        warm = [
            x.ttft
            for r in runs
            if (r.scenario, r.arm, r.max_tokens) == (scenario, "optimized", max_tokens)
            for x in r.tasks
            if x.index > 1 and x.ttft is not None
        ]
        if cold and warm:
            c, w = statistics.median(cold), statistics.median(warm)
            rows.append([scenario, _s(c), _s(w), f"{w / c:.3f}", "yes" if w <= c / 10 else "NO"])
    if not rows:
        return None
    return Grid(
        "Warm vs cold TTFT (target: warm at most a tenth of cold)",
        [
            "scenario",
            "cold TTFT p50 s (no-reuse)",
            "warm TTFT p50 s (optimized, after #1)",
            "ratio",
            "<= 0.1",
        ],
        rows,
    )


def grids(runs: Sequence[ArmRun], tiers: AgentTierMap, settings: BenchSettings) -> list[Grid]:
    out: list[Grid] = [summary_grid(runs, settings.max_tokens)]
    for extra in (
        ttft_ratio_grid(runs, settings.max_tokens),
        sweep_grid(runs),
        tier_grid(runs, tiers, settings.max_tokens),
        throughput_grid(runs),
    ):
        if extra is not None:
            out.append(extra)
    for scenario in settings.scenarios:
        grid = per_request_grid(runs, scenario, settings.max_tokens)
        if grid is not None:
            out.append(grid)
    return out


def markdown_report(env: dict[str, Any], all_grids: Sequence[Grid]) -> str:
    head = [
        "# prefixcache benchmark report",
        "",
        f"- engine: {env['engine']} {env['engine_version']}, model `{env['model']}`, block size {env['block_size']}, device {env['device']}",
        f"- machine: {env['cpu_model']}, {env['cpu_cores']} cores, Python {env['python']}",
        f"- command: `{env['command']}`",
        f"- isolation: {env['isolation']}",
        "",
    ]
    return "\n".join(head) + "\n".join(g.markdown() for g in all_grids)


def print_report(console: Console, all_grids: Sequence[Grid]) -> None:
    for grid in all_grids:
        console.print(grid.rich())
        if grid.note:
            console.print(f"[dim]{grid.note}[/dim]")
        console.print()


def plot(runs: Sequence[ArmRun], out_dir: Path, max_tokens: int) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: list[Path] = []
    sequential = [
        r
        for r in runs
        if r.scenario != "concurrent" and r.max_tokens == max_tokens and r.repeat == 1
    ]
    scenarios = list(dict.fromkeys(r.scenario for r in sequential))
    if scenarios:
        fig, axes = plt.subplots(
            len(scenarios), 1, figsize=(9, 3.2 * len(scenarios)), squeeze=False
        )
        for ax, scenario in zip(axes[:, 0], scenarios, strict=True):
            for run in (r for r in sequential if r.scenario == scenario):
                xs = [x.index for x in run.tasks]
                ax.plot(xs, [x.ttft or 0 for x in run.tasks], marker="o", label=run.arm)
            ax.set_title(SCENARIO_TITLES[scenario])
            ax.set_xlabel("request #")
            ax.set_ylabel("TTFT (s)")
            ax.set_yscale("log")
            ax.legend()
        fig.tight_layout()
        paths.append(out_dir / "ttft_per_request.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    groups = _groups([r for r in runs if r.max_tokens == max_tokens])
    if groups:
        scen = list(dict.fromkeys(k[0] for k in groups))
        arms = list(dict.fromkeys(k[2] for k in groups))
        fig, ax = plt.subplots(figsize=(10, 4))
        width = 0.8 / len(arms)
        for j, arm in enumerate(arms):
            heights = [
                total_of(groups[(s, max_tokens, arm)]) if (s, max_tokens, arm) in groups else 0
                for s in scen
            ]
            ax.bar([i + j * width for i in range(len(scen))], heights, width, label=arm)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(scen))], scen)
        ax.set_ylabel("total time (s)")
        ax.set_title(f"Total time per scenario and arm (max_tokens={max_tokens})")
        ax.legend()
        fig.tight_layout()
        paths.append(out_dir / "total_time_per_scenario.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def save(
    out_dir: Path, env: dict[str, Any], runs: Sequence[ArmRun], all_grids: Sequence[Grid]
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {"environment": env, "runs": [as_dict(r) for r in runs]}
    paths = [out_dir / "results.json", out_dir / "report.md"]
    paths[0].write_text(json.dumps(data, indent=2) + "\n")
    paths[1].write_text(markdown_report(env, all_grids))
    return paths + plot(runs, out_dir, int(env["settings"]["max_tokens"]))


def requests_of(runs: Sequence[ArmRun]) -> list[RequestResult]:
    return [x for r in runs for x in r.requests]
