"""``prefixcache analyze``: token-exact analysis of the agents' prompts on a live server."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ..diagnostics.chat_template import TEMPLATE_FIX
from ..diagnostics.tokens import AnalysisReport, analyze_agents
from ..engine.local import free_port
from .common import BaseUrlOption, console, csv, handled, short_tier, state
from .engine import local_engine


def register(app: typer.Typer) -> None:
    app.command()(handled(analyze))


def analyze(
    ctx: typer.Context,
    agent: Annotated[
        list[str] | None,
        typer.Option(
            "--agent",
            "-a",
            help="Agent type (repeatable or comma-separated; default frontend-engineer, "
            "orchestrator).",
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
    agents = csv(agent) or ["frontend-engineer", "orchestrator"]
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
