"""``prefixcache analyze`` (token-exact, on a live server) and ``prefixcache doctor``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ..diagnostics.chat_template import TEMPLATE_FIX
from ..diagnostics.doctor import run_checks
from ..diagnostics.tokens import AnalysisReport, analyze_agents
from ..engine.local import free_port
from .common import BaseUrlOption, console, handled, short_tier, state
from .engine import local_engine


def register(app: typer.Typer) -> None:
    app.command()(handled(analyze))
    app.command()(handled(doctor))


def analyze(
    ctx: typer.Context,
    agent: Annotated[
        list[str] | None,
        typer.Option(
            "--agent",
            "-a",
            help="Agent type (repeatable; default frontend-engineer, orchestrator).",
        ),
    ] = None,
    base_url: BaseUrlOption = None,
    start_engine: Annotated[
        bool,
        typer.Option(
            "--start-engine", help="Start the embedded engine for this run, then stop it."
        ),
    ] = False,
    live: Annotated[bool, typer.Option(help="Send two real requests per agent.")] = True,
) -> None:
    """Token-exact analysis on a live server: static/dynamic tokens, block size, predicted vs
    measured cached tokens."""
    cli = state(ctx)
    cfg = cli.vllm(base_url)
    agents = agent or ["frontend-engineer", "orchestrator"]
    if start_engine:
        cfg = cfg.with_overrides(base_url=None, port=free_port(cfg.host))
        with local_engine(cfg):
            report = analyze_agents(cli.library, cfg, agents, live=live)
    else:
        report = analyze_agents(cli.library, cfg, agents, live=live)
    _print_analysis(report)
    if any(r.matches is False for r in report.results):
        raise typer.Exit(1)


def _print_analysis(report: AnalysisReport) -> None:
    table = Table(
        title=f"Token-exact cache analysis: {report.url} (vLLM {report.version}, model "
        f"{report.model}, block {report.block_size})"
    )
    for column in ("agent", "tier"):
        table.add_column(column, no_wrap=True)
    for column in (
        "prompt tok",
        "static tok",
        "dynamic tok",
        "static %",
        "predicted cold/warm",
        "measured cold/warm",
        "TTFT cold/warm s",
        "match",
    ):
        table.add_column(column, justify="right")
    for r in report.results:
        measured = "-" if r.measured_warm is None else f"{r.measured_cold}/{r.measured_warm}"
        ttft = (
            "-"
            if r.cold_ttft is None or r.warm_ttft is None
            else f"{r.cold_ttft:.2f}/{r.warm_ttft:.2f}"
        )
        table.add_row(
            r.agent_type,
            short_tier(r.tier),
            str(r.prompt_tokens),
            str(r.shared_tokens),
            str(r.dynamic_tokens),
            f"{r.shared_tokens / r.prompt_tokens:.1%}",
            f"{r.predicted_cold}/{r.predicted_warm}",
            measured,
            ttft,
            {True: "yes", False: "NO", None: "-"}[r.matches],
        )
    console.print(table)
    console.print(
        "predicted warm = min(floor(shared/block)*block, floor((prompt-1)/block)*block); "
        "each agent's pair runs under a fresh cache_salt, so the cold request is honestly cold."
    )
    if report.template.problems:
        console.print(
            f"[bold red]warning:[/bold red] {'; '.join(report.template.problems)}\n{TEMPLATE_FIX}"
        )


def doctor(
    ctx: typer.Context,
    base_url: BaseUrlOption = None,
    agent: Annotated[str, typer.Option(help="Agent for the live test.")] = "frontend-engineer",
) -> None:
    """Check the setup end to end (PASS/FAIL with the fix); exit 1 if any check fails."""
    cli = state(ctx)
    checks = run_checks(cli.library, cli.vllm(base_url), agent_type=agent)
    for check in checks:
        colour = {"PASS": "green", "FAIL": "red", "SKIP": "yellow"}[check.status]
        console.print(f"[{colour}]{check.status}[/{colour}] {check.name}: {check.detail}")
        if check.fix and check.status == "FAIL":
            console.print(f"     fix: {check.fix}")
    if any(c.status == "FAIL" for c in checks):
        raise typer.Exit(1)
