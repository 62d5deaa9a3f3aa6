"""``prefixcache bench``: the live benchmark, with its report."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from ..bench.scenarios import ARM_NAMES, DEFAULT_ARMS, SCENARIOS
from ..bench.session import BenchSession
from ..engine.local import free_port
from ..traces.records import save_trace
from .common import BaseUrlOption, console, csv, csv_numbers, err_console, handled, state
from .engine import local_engine


def register(app: typer.Typer) -> None:
    app.command()(handled(bench))
    app.command("fleet-bench")(handled(fleet_bench))


# -- bench's options: what is run ----------------------------------------------------------

Scenarios = Annotated[
    list[str] | None,
    typer.Option(
        "--scenario",
        "-s",
        help=f"Scenario(s), repeatable or comma-separated: {', '.join(SCENARIOS)} or all "
        "(default: single).",
    ),
]
Arms = Annotated[
    list[str] | None,
    typer.Option(
        "--arms",
        help=f"Arms (repeatable or comma-separated): {', '.join(ARM_NAMES)} or all (default: all but "
        "prefetch).",
    ),
]
Repeat = Annotated[
    int, typer.Option(min=1, help="Run everything N times (medians and spread reported).")
]
MaxTokens = Annotated[int, typer.Option(min=1, help="Tokens decoded per request.")]
Sweep = Annotated[
    list[str] | None,
    typer.Option(
        help="Scenario 1 again at these max_tokens (repeatable or comma-separated), "
        "e.g. 16,32,64,256."
    ),
]
Sessions = Annotated[int, typer.Option(min=1, help="Concurrent sessions (scenario 5).")]
RequestsPerSession = Annotated[int, typer.Option(min=1, help="Requests per session (scenario 5).")]
Passes = Annotated[
    int,
    typer.Option(
        min=1,
        help="Passes over each sequential scenario: pass 1 is cold, the rest the steady "
        "state (same agents, other users and sessions).",
    ),
]
Tasks = Annotated[
    int | None,
    typer.Option(
        min=1, help="At most N steps of each of scenarios 1-3 (default: the guide's 10, 10, 20)."
    ),
]
FitMinutes = Annotated[
    float | None,
    typer.Option(
        min=1.0,
        help="Size the run to end within M minutes of the command's start (engine start "
        "included), from the engine's measured speed: fewer tasks and apps on a slower "
        "machine. Prints the plan and its estimate first.",
    ),
]
ToolTime = Annotated[
    float,
    typer.Option(
        min=0.0, help="Seconds between a step's answer and the next step (tools running)."
    ),
]


def _chosen(
    values: list[str] | None, known: list[str], default: list[str], option: str
) -> list[str]:
    """A list option's values (``all`` for every known one); a usage error names the
    unknown ones and the choices."""
    chosen = csv(values) or default
    if "all" in chosen:
        return list(known)
    unknown = [x for x in chosen if x not in known]
    if unknown:
        raise typer.BadParameter(
            f"unknown value(s) {unknown}; choose from {', '.join(known)}, all", param_hint=option
        )
    return chosen


def bench(
    ctx: typer.Context,
    scenario: Scenarios = None,
    arms: Arms = None,
    repeat: Repeat = 1,
    max_tokens: MaxTokens = 32,
    sweep: Sweep = None,
    sessions: Sessions = 8,
    requests_per_session: RequestsPerSession = 3,
    passes: Passes = 1,
    tool_time: ToolTime = 0.0,
    tasks: Tasks = None,
    fit_minutes: FitMinutes = None,
    base_url: BaseUrlOption = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out-dir", help="Results folder (default results/<timestamp>)."),
    ] = None,
) -> None:
    """Run real agent workflows on a real vLLM server, arms side by side, and write a report."""
    began = time.monotonic()
    scenarios = _chosen(scenario, list(SCENARIOS), ["single"], "--scenario")
    chosen_arms = _chosen(arms, list(ARM_NAMES), list(DEFAULT_ARMS), "--arms")
    sweep_counts = tuple(csv_numbers(sweep, int, "--sweep", 1))
    cli = state(ctx)
    session = BenchSession(
        library=cli.library,
        scenarios=tuple(scenarios),
        arms=tuple(chosen_arms),
        repeat=repeat,
        max_tokens=max_tokens,
        sweep=sweep_counts,
        sessions=sessions,
        requests_per_session=requests_per_session,
        passes=passes,
        tool_time=tool_time,
        tasks=tasks,
        fit_minutes=fit_minutes,
        began=began,
        out=out_dir or Path("results") / datetime.now().strftime("%Y%m%d-%H%M%S"),
        command="prefixcache " + " ".join(sys.argv[1:])
        if "bench" in sys.argv
        else "prefixcache bench",
        console=console,
        progress_console=err_console,
    )
    cfg = cli.vllm(base_url)
    if fit_minutes is not None:
        err_console.print(
            f"sizing the run to end within {fit_minutes:g} min: the engine's speed is "
            "measured first, then the plan and its estimate are printed",
            highlight=False,
        )
    if base_url or cfg.base_url:
        # an engine `prefixcache engine start` runs here: its dtype and measured speed
        local = local_engine(cfg)
        facts = local.facts() if local.serves(cfg.url) else None
        ok = session.run(cfg, device="remote", engine_facts=facts)
    else:
        cfg = cfg.with_overrides(base_url=None, port=free_port(cfg.host))
        with local_engine(cfg) as engine:
            ok = session.run(cfg, device=cfg.resolved_device(), engine_facts=engine.facts())
    if not ok:
        raise typer.Exit(1)


def fleet_bench(
    ctx: typer.Context,
    replicas: Annotated[int, typer.Option(min=1, max=8, help="Replicas to start.")] = 2,
    sessions: Annotated[int, typer.Option(min=1, help="Concurrent sessions.")] = 8,
    turns: Annotated[int, typer.Option(min=1, help="Turns per session.")] = 4,
    max_tokens: Annotated[int, typer.Option(min=1, help="Tokens decoded per request.")] = 4,
    kv_space_gib: Annotated[
        int | None,
        typer.Option(min=1, help="KV cache per replica (GiB; default fleet.kv_space_gib)."),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out-dir", help="Results folder (default results/fleet-<timestamp>)."),
    ] = None,
) -> None:
    """The fleet benchmark: N fresh replicas behind vllm-router, the same agent sessions
    under each policy (fresh caches and router per policy), beside one replica and
    unique salts; prints and writes the table."""
    from ..bench.fleet import fleet_benchmark, fleet_grid
    from ..engine.fleet import Fleet

    cli = state(ctx)
    updates: dict[str, object] = {"replicas": replicas, "dev_mode": True}
    if kv_space_gib is not None:
        updates["kv_space_gib"] = kv_space_gib
    fleet = Fleet(
        cli.vllm(),
        cli.settings.fleet.model_copy(update=updates),
        progress=lambda msg: err_console.print(f"[dim]fleet:[/dim] {msg}"),
    )
    with fleet:
        runs = fleet_benchmark(
            fleet,
            cli.library,
            sessions=sessions,
            turns=turns,
            max_tokens=max_tokens,
            progress=lambda msg: err_console.print(f"[dim]fleet bench:[/dim] {msg}"),
        )
    grid = fleet_grid(runs, replicas)
    console.print(grid.rich())
    console.print(f"[dim]{grid.note}[/dim]")
    folder = out_dir or Path("results") / datetime.now().strftime("fleet-%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fleet.md").write_text(grid.markdown())
    save_trace(folder / "trace.jsonl", [r for run in runs for r in run.records])
    console.print(f"report: {folder / 'fleet.md'}")
