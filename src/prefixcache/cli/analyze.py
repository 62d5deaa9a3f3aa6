"""``prefixcache analyze``: token-exact analysis of the agents' prompts on a live server."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from ..diagnostics.chat_template import TEMPLATE_FIX
from ..diagnostics.tokens import AnalysisReport, TokenAnalysis, analyze_agents
from ..engine.local import free_port
from .common import (
    BaseUrlOption,
    Format,
    FormatOption,
    OutFileOption,
    console,
    csv,
    handled,
    short_tier,
    state,
    write_out,
)
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
    fmt: FormatOption = Format.TABLE,
    out: OutFileOption = None,
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
    data = json.dumps(report.to_json(), indent=2) + "\n"
    if fmt is Format.JSON:
        console.print_json(data) if out is None else None
        write_out(out, data)
    elif fmt is Format.MARKDOWN:
        text = _analysis_markdown(report)
        console.print(text, markup=False, highlight=False) if out is None else None
        write_out(out, text)
    else:
        _print_analysis(report)
        write_out(out, data)
    if any(r.matches is False for r in report.results):
        raise typer.Exit(1)


COLUMNS = (
    "agent",
    "tier",
    "prompt tok",
    "static tok",
    "dynamic tok",
    "static %",
    "predicted cold/warm",
    "measured cold/warm",
    "TTFT cold/warm s",
    "match",
)


def _cells(r: TokenAnalysis) -> list[str]:
    measured = "-" if r.measured_warm is None else f"{r.measured_cold}/{r.measured_warm}"
    ttft = (
        "-"
        if r.cold_ttft is None or r.warm_ttft is None
        else f"{r.cold_ttft:.2f}/{r.warm_ttft:.2f}"
    )
    return [
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
    ]


def _title(report: AnalysisReport) -> str:
    return (
        f"Token-exact cache analysis: {report.url} (vLLM {report.version}, model "
        f"{report.model}, block {report.block_size})"
    )


def _analysis_markdown(report: AnalysisReport) -> str:
    lines = [
        _title(report),
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in report.results]
    if report.template.problems:
        lines += ["", f"Warning: {'; '.join(report.template.problems)}. {TEMPLATE_FIX}"]
    return "\n".join(lines) + "\n"


def _print_analysis(report: AnalysisReport) -> None:
    table = Table(title=_title(report))
    for column in COLUMNS:
        table.add_column(
            column,
            no_wrap=column in ("agent", "tier"),
            justify="left" if column in ("agent", "tier") else "right",
        )
    for r in report.results:
        table.add_row(*_cells(r))
    console.print(table)
    console.print(
        "predicted warm = min(floor(shared/block)*block, floor((prompt-1)/block)*block); "
        "each agent's pair runs under a fresh cache_salt, so the cold request is honestly cold."
    )
    if report.template.problems:
        console.print(
            f"[bold red]warning:[/bold red] {'; '.join(report.template.problems)}\n{TEMPLATE_FIX}"
        )
