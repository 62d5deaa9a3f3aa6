"""The benchmark report: the same tables for the terminal (rich) and Markdown, and JSON
with every request (plots: ``plots.py``). Reads ``ArmRun``s; never reaches back into the
runner."""

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

from ..engine.calibration import Calibration
from ..engine.cpu import UNKNOWN_CPU, CpuInfo
from ..llm.metrics import percentile
from ..prompts.tiers import AgentTierMap
from .plots import plot
from .results import ArmRun, as_dict, group_runs, time_of, total_of
from .runner import BenchSettings, describe_isolation
from .scenarios import SCENARIO_TITLES
from .unmodified import AppsRun, app_hit_rate


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
    model = CpuInfo.read().model
    return model if model != UNKNOWN_CPU else platform.processor() or platform.machine()


def environment(
    *,
    engine_version: str | None,
    model: str,
    block_size: int,
    device: str,
    base_url: str,
    settings: BenchSettings,
    command: str,
    kv_blocks: int | None = None,
    engine_facts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    facts = engine_facts or {}
    return {
        "engine": "vLLM",
        "engine_version": engine_version,
        "model": model,
        "block_size": block_size,
        "kv_blocks": kv_blocks,
        "device": device,
        "base_url": base_url,
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_class": facts.get("cpu_class", "unknown (a server not started here)"),
        "dtype": facts.get("dtype", "unknown"),
        "dtype_reason": facts.get("dtype_reason", "a server not started by prefixcache"),
        "calibration": facts.get("calibration"),
        "python": platform.python_version(),
        "command": command,
        "settings": {
            "scenarios": list(settings.scenarios),
            "arms": list(settings.arms),
            "repeat": settings.repeat,
            "max_tokens": settings.max_tokens,
            "sweep": list(settings.sweep),
            "passes": settings.passes,
            "tool_time": settings.tool_time,
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


def reuse_after_first(runs: Sequence[ArmRun]) -> tuple[float | None, int]:
    """min measured/predicted over requests after #1 that vLLM could reuse, and their count."""
    ratios = [
        x.reuse_reached
        for r in runs
        for x in r.tasks
        if x.index > 1 and x.reuse_reached is not None
    ]
    return (min(ratios) if ratios else None), len(ratios)


def _spread(group: Sequence[ArmRun], baseline: Sequence[ArmRun] | None) -> str:
    """min-max of the arm's time (and speedup) over repeats; '-' for a single repeat."""
    if len(group) < 2:
        return "-"
    times = sorted(time_of(r) for r in group)
    text = f"{times[0]:.1f}-{times[-1]:.1f} s"
    if baseline and len(baseline) == len(group):
        ratios = sorted(
            time_of(b) / time_of(r) for b, r in zip(baseline, group, strict=True) if time_of(r)
        )
        if ratios:
            text += f" ({ratios[0]:.2f}-{ratios[-1]:.2f}x)"
    return text


def fresh_tokens(group: Sequence[ArmRun]) -> float | None:
    """Mean prompt tokens prefilled (not from the cache) per request after the first."""
    values = [
        x.prompt_tokens - x.cached_tokens
        for r in group
        for x in r.ok_tasks
        if (x.index > 1 or r.phase == "steady") and x.cached_tokens is not None
    ]
    return sum(values) / len(values) if values else None


def summary_grid(runs: Sequence[ArmRun], default_max_tokens: int, phase: str = "cold") -> Grid:
    groups = group_runs(runs, phase)
    rows = []
    repeats = max((r.repeat for r in runs), default=1)
    for (scenario, max_tokens, arm), group in groups.items():
        if max_tokens != default_max_tokens:
            continue
        baseline = groups.get((scenario, max_tokens, "no-reuse"))
        reference = groups.get((scenario, max_tokens, "reference"))
        total = total_of(group)
        speedup = total_of(baseline) / total if baseline and total else None
        vs_reference = total_of(reference) / total if reference and total else None
        tasks = [x for r in group for x in r.ok_tasks]
        ttfts = [x.ttft for x in tasks if x.ttft is not None]
        reached, counted = reuse_after_first(group)
        hit = _median(h for r in group if (h := r.hit_rate) is not None)
        warm = _median(r.warmup_time for r in group) if any(r.warmup_time for r in group) else None
        failed = sum(len(r.failed) for r in group)
        incomplete = any(not r.complete for r in group)
        row = [
            SCENARIO_TITLES[scenario].split(",")[0],
            arm,
            str(len(group[0].tasks)) + ("*" if incomplete else ""),
            str(failed),
            _s(total, "{:.1f}"),
            _s(warm, "{:.1f}"),
            _s(speedup, "{:.2f}x"),
            _s(vs_reference, "{:.2f}x"),
            _pct(hit),
            _s(fresh_tokens(group), "{:.0f}"),
            _s(percentile(ttfts, 50)),
            _s(percentile(ttfts, 95)),
            "-" if reached is None else f"{reached * 100:.0f}% (n={counted})",
        ]
        if repeats > 1:
            row.append(_spread(group, baseline))
        rows.append(row)
    headers = [
        "scenario",
        "arm",
        "requests",
        "failed",
        "total s",
        "warm-up s",
        "speedup vs no-reuse",
        "vs reference",
        "hit rate",
        "fresh tok/req",
        "TTFT p50 s",
        "TTFT p95 s",
        "reuse reached (min)",
    ]
    if repeats > 1:
        headers.append(f"spread over {repeats} repeats")
    title = (
        f"Summary at max_tokens={default_max_tokens}"
        if phase == "cold"
        else f"Steady state (passes after the first: same agents, other users and sessions), max_tokens={default_max_tokens}"
    )
    return Grid(
        title,
        headers,
        rows,
        "total = sum of the successful requests' times (concurrent: wall time), median over "
        "repeats; warm-up is reported apart and not in the total; failed requests are rows of "
        "their own and not in the total; * = the arm did not finish (see the run's status). "
        "reuse reached = measured / predicted cached tokens for requests after the first, where "
        "predicted = min(floor(shared/block)*block, floor((prompt-1)/block)*block) from /tokenize. "
        "vs reference = the reference arm's total / this arm's total (above 1x: faster than the "
        "guide's own layout). fresh tok/req = prompt tokens not served from the cache, per "
        "request after the first (warm-up: the warmed arm's prefills, or the prefetch arm's "
        "background prefetches).",
    )


def per_request_grid(runs: Sequence[ArmRun], scenario: str, max_tokens: int) -> Grid | None:
    arms = [
        r
        for r in runs
        if r.scenario == scenario
        and r.max_tokens == max_tokens
        and r.repeat == 1
        and r.phase == "cold"
    ]
    if not arms or scenario == "concurrent":
        return None
    headers = ["#", "agent"]
    for run in arms:
        headers += [f"{run.arm} hit", f"{run.arm} TTFT s", f"{run.arm} time s", f"{run.arm} vs #1"]
    rows = []
    longest = max(arms, key=lambda r: len(r.tasks))
    for i, task in enumerate(longest.tasks):
        row = [str(task.index), task.agent_type]
        for run in arms:
            if i >= len(run.tasks):
                row += ["-", "-", "-", "-"]
                continue
            x, first = run.tasks[i], run.tasks[0]
            if not x.success:
                row += ["FAILED", "-", "-", "-"]
                continue
            ratio = (
                f"{first.processing_time / x.processing_time:.2f}x"
                if first.success and x.processing_time
                else "-"
            )
            row += [_pct(x.hit_rate), _s(x.ttft), _s(x.processing_time), ratio]
        rows.append(row)
    return Grid(
        f"{SCENARIO_TITLES[scenario]}: per request (max_tokens={max_tokens})", headers, rows
    )


def failures_grid(runs: Sequence[ArmRun]) -> Grid | None:
    failed = [x for r in runs for x in r.failed]
    if not failed:
        return None
    rows = [
        [
            x.scenario,
            x.arm,
            str(x.repeat),
            "warm-up" if x.warmup else str(x.index),
            x.agent_type,
            (x.error or "")[:160],
        ]
        for x in failed
    ]
    return Grid(
        f"Failed requests ({len(failed)})",
        ["scenario", "arm", "repeat", "#", "agent", "error"],
        rows,
    )


def tier_grid(runs: Sequence[ArmRun], tiers: AgentTierMap, max_tokens: int) -> Grid | None:
    rows = []
    for scenario in ("mixed", "workflow"):
        for arm in ("reference", "optimized", "aligned", "prefetch", "warmed"):
            tasks = [
                x
                for r in runs
                if (r.scenario, r.arm, r.max_tokens, r.phase) == (scenario, arm, max_tokens, "cold")
                for x in r.ok_tasks
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
    groups = group_runs([r for r in runs if r.scenario == "single"])
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
    groups = group_runs(concurrent)
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
            if (r.scenario, r.arm, r.max_tokens, r.phase)
            == (scenario, "no-reuse", max_tokens, "cold")
            for x in r.tasks
            if x.ttft is not None
        ]
        warm = [
            x.ttft
            for r in runs
            if (r.scenario, r.arm, r.max_tokens, r.phase)
            == (scenario, "optimized", max_tokens, "cold")
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


#: the direct arms the service is compared with (the best of them by total time is shown)
DIRECT_ARMS = ("optimized", "aligned", "prefetch", "warmed", "append-only")


def service_grid(runs: Sequence[ArmRun], max_tokens: int) -> Grid | None:
    """What a user of ``prefixcache serve`` gets, beside the guide's reference layout sent
    straight to the engine, no-reuse, and the library's best direct arm, per scenario and
    pass: the README's first table."""
    if not any(r.arm == "service" for r in runs):
        return None
    rows = []
    for phase in ("cold", "steady"):
        groups = group_runs([r for r in runs if r.max_tokens == max_tokens], phase)
        for scenario in dict.fromkeys(k[0] for k in groups):
            service = groups.get((scenario, max_tokens, "service"))
            if service is None:
                continue
            reference = groups.get((scenario, max_tokens, "reference"))
            if reference is None:  # multi-turn: the guide's layout is its reference
                reference = groups.get((scenario, max_tokens, "guide-layout"))
            baseline = groups.get((scenario, max_tokens, "no-reuse"))
            direct = [g for a in DIRECT_ARMS if (g := groups.get((scenario, max_tokens, a)))]
            best = min(direct, key=total_of) if direct else None
            for group in (service, reference, best, baseline):
                if group is None:
                    continue
                rows.append(_service_row(scenario, phase, group, reference, baseline))
    if not rows:
        return None
    return Grid(
        f"Through the service (prefixcache serve as shipped) vs the guide's layout, "
        f"max_tokens={max_tokens}",
        [
            "scenario",
            "pass",
            "arm",
            "requests",
            "failed",
            "total s",
            "vs reference",
            "vs no-reuse",
            "TTFT p50 s",
            "TTFT p95 s",
            "fresh tok/req",
            "hit rate",
            "overhead p50 ms",
            "overhead p95 ms",
            "warm-up",
            "out tok/req",
        ],
        rows,
        "service = a fresh `prefixcache serve` process per arm run, on the same engine in the "
        "same run, its start-up warm-up reported apart (warm-up: prefixes in seconds, before "
        "the requests); /chat streamed (TTFT = first token at the client); the workflow as "
        "a /tasks chain with the plan declared (not streamed: TTFT = engine TTFT + all of "
        "the service's own time, an upper bound). The reference layout (multi-turn: the "
        "guide's history-in-system layout) is sent straight to the engine. Best direct arm = "
        "the library's fastest direct arm in this pass. total = sum of request times "
        "(concurrent: wall time); vs x = x's total / this arm's (above 1x: faster). "
        "overhead = client time - the engine time the service measured. out tok/req: the "
        "direct arms decode exactly max_tokens (ignore_eos); the service stops at the "
        "model's end of sequence, as its users' requests do.",
    )


def _service_row(
    scenario: str,
    phase: str,
    group: Sequence[ArmRun],
    reference: Sequence[ArmRun] | None,
    baseline: Sequence[ArmRun] | None,
) -> list[str]:
    total = total_of(group)
    tasks = [x for r in group for x in r.ok_tasks]
    ttfts = [x.ttft for x in tasks if x.ttft is not None]
    overheads = [x.overhead * 1000 for x in tasks if x.overhead is not None]
    hit = _median(h for r in group if (h := r.hit_rate) is not None)
    warm = group[0]
    warmup = (
        f"{warm.warmed_prefixes} in {warm.warmup_time:.1f} s"
        if warm.warmed_prefixes
        else (f"{warm.warmup_time:.1f} s" if warm.warmup_time else "-")
    )
    out_tokens = sum(x.completion_tokens for x in tasks) / len(tasks) if tasks else None
    return [
        SCENARIO_TITLES[scenario].split(",")[0],
        phase,
        group[0].arm,
        str(len(group[0].tasks)) + ("" if all(r.complete for r in group) else "*"),
        str(sum(len(r.failed) for r in group)),
        _s(total, "{:.1f}"),
        _s(total_of(reference) / total if reference and total else None, "{:.2f}x"),
        _s(total_of(baseline) / total if baseline and total else None, "{:.2f}x"),
        _s(percentile(ttfts, 50), "{:.3f}"),
        _s(percentile(ttfts, 95), "{:.3f}"),
        _s(fresh_tokens(group), "{:.0f}"),
        _pct(hit),
        _s(percentile(overheads, 50), "{:.1f}"),
        _s(percentile(overheads, 95), "{:.1f}"),
        warmup if phase == "cold" else "-",
        _s(out_tokens, "{:.1f}"),
    ]


def _ratio(on: float | None, off: float | None) -> str:
    """on / off; with nothing cached when off and something when on: unbounded."""
    if on is None or off is None:
        return "-"
    if off == 0:
        return "from 0" if on > 0 else "-"
    return f"{on / off:.1f}x"


def apps_grid(run: AppsRun) -> Grid:
    """Per app nobody rewrote: the hit rate after the family's first two requests, sent
    straight to the engine, through the gateway with the stabilizer off and on, and laid
    out by hand; the shadow tenant's prediction of ``on`` beside ``on``'s measurement."""
    rows = []
    apps = list(dict.fromkeys(r.app for r in run.results))
    for app in apps:
        mine = [r for r in run.results if r.app == app]

        def arm(name: str, after: int = 2, rows_: list[Any] = mine) -> float | None:
            return app_hit_rate([r for r in rows_ if r.arm == name], after)

        on, off, fixed = arm("on"), arm("off"), arm("hand-fixed")
        on_all = arm("on", 0)
        predicted = run.predictions.get(app)
        shadow = predicted.stabilized if predicted else None
        rewrites = sum(1 for r in mine if r.arm == "on" and r.rewritten)
        ttft = {
            name: percentile([r.ttft for r in mine if r.arm == name and r.ttft], 50)
            for name in ("off", "on", "hand-fixed")
        }
        failed = sum(1 for r in mine if not r.success)
        rows.append(
            [
                app,
                _pct(arm("direct")),
                _pct(off),
                _pct(on),
                _pct(fixed),
                _s(on / fixed if on is not None and fixed else None, "{:.2f}"),
                _ratio(on, off),
                _pct(shadow),
                _pct(on_all),
                "-" if shadow is None or on_all is None else f"{(shadow - on_all) * 100:+.1f}",
                str(rewrites),
                " / ".join(_s(ttft[k], "{:.2f}") for k in ("off", "on", "hand-fixed")),
                str(failed),
            ]
        )
    return Grid(
        "6. Apps nobody rewrote: the gateway's stabilizer (hit rate after each app's first "
        "two requests)",
        [
            "app",
            "direct",
            "gateway off",
            "gateway on",
            "hand-fixed",
            "on / fixed",
            "on / off",
            "shadow predicts on (all)",
            "on measured (all)",
            "points",
            "rewrites (on)",
            "TTFT p50 s off / on / fixed",
            "failed",
        ],
        rows,
        "Each app's requests went straight to the engine (direct), through the gateway "
        "of a real `prefixcache serve` under three tenants (stabilizer off, shadow, on), "
        "and laid out by hand (hand-fixed: the volatile lines moved last, lists sorted, "
        "LF line ends): arms interleaved, each under its own salt. Hit rate = cached / "
        "prompt tokens (the engine's usage) of requests 3 onwards. The shadow tenant "
        "sent its requests unchanged and predicted, block-exact with the engine's "
        "tokenizer, what `on` would get (its /stats, all requests), beside `on`'s "
        "measurement over the same requests.",
    )


def grids(runs: Sequence[ArmRun], tiers: AgentTierMap, settings: BenchSettings) -> list[Grid]:
    out: list[Grid] = []
    service = service_grid(runs, settings.max_tokens)
    if service is not None:
        out.append(service)
    out.append(summary_grid(runs, settings.max_tokens))
    if any(r.phase == "steady" for r in runs):
        out.append(summary_grid(runs, settings.max_tokens, "steady"))
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
    failures = failures_grid(runs)
    if failures is not None:
        out.append(failures)
    return out


def _speed(data: object) -> str:
    calibration = Calibration.from_dict(data)
    return calibration.summary() if calibration else "not measured (a server not started here)"


def markdown_report(env: dict[str, Any], all_grids: Sequence[Grid]) -> str:
    head = [
        "# prefixcache benchmark report",
        "",
        f"- engine: {env['engine']} {env['engine_version']}, model `{env['model']}`, block size {env['block_size']}, device {env['device']}",
        f"- machine: {env['cpu_model']}, {env['cpu_cores']} cores, Python {env['python']}",
        f"- CPU class: {env.get('cpu_class', 'unknown')}; dtype {env.get('dtype', 'unknown')}: "
        f"{env.get('dtype_reason', 'not recorded')}",
        f"- measured at engine start: {_speed(env.get('calibration'))}",
        f"- command: `{env['command']}`",
        f"- isolation: {env['isolation']}",
    ]
    status = env.get("status")
    if status:
        head.append(f"- status: {status['text']}")
    head.append("")
    return "\n".join(head) + "\n".join(g.markdown() for g in all_grids)


def print_report(console: Console, all_grids: Sequence[Grid]) -> None:
    for grid in all_grids:
        console.print(grid.rich())
        if grid.note:
            console.print(f"[dim]{grid.note}[/dim]")
        console.print()


def save(
    out_dir: Path, env: dict[str, Any], runs: Sequence[ArmRun], all_grids: Sequence[Grid]
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {"environment": env, "runs": [as_dict(r) for r in runs]}
    paths = [out_dir / "results.json", out_dir / "report.md"]
    paths[0].write_text(json.dumps(data, indent=2) + "\n")
    paths[1].write_text(markdown_report(env, all_grids))
    if not runs:  # only the unmodified apps: no per-arm plots
        return paths
    return paths + plot(runs, out_dir, int(env["settings"]["max_tokens"]))


def run_status(
    runs: Sequence[ArmRun], settings: BenchSettings, interrupted: str | None = None
) -> dict[str, Any]:
    """Whether the run finished, and if not, what is missing (for the report and JSON)."""
    planned = settings.planned_requests()
    done = sum(len(r.requests) for r in runs)
    failed = sum(len(r.failed) for r in runs)
    finished = {(r.scenario, r.max_tokens, r.arm, r.repeat) for r in runs if r.complete}
    missing = []
    for repeat in range(1, settings.repeat + 1):
        for scenario in settings.scenario_objects():
            for max_tokens in settings.token_counts(scenario):
                for arm in settings.arms_for(scenario):
                    if (scenario.name, max_tokens, arm.name, repeat) not in finished:
                        missing.append(f"{scenario.name}/{arm.name}/m{max_tokens}/r{repeat}")
    complete = interrupted is None and not missing
    if complete:
        text = f"complete: {done} requests, {failed} failed"
    else:
        text = (
            f"INCOMPLETE ({interrupted or 'stopped early'}): {done} of {planned} requests sent, "
            f"{failed} failed; arm runs not finished: {', '.join(missing) or 'none'}"
        )
    return {
        "complete": complete,
        "planned": planned,
        "sent": done,
        "failed": failed,
        "missing": missing,
        "interrupted": interrupted,
        "text": text,
    }
