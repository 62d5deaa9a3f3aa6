"""``prefixcache doctor``: the set-up checked end to end, each check with its fix."""

from __future__ import annotations

from typing import Annotated

import typer

from ..diagnostics.doctor import run_checks
from .common import BaseUrlOption, console, handled, state


def register(app: typer.Typer) -> None:
    app.command()(handled(doctor))


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
