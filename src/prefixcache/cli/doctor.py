"""``prefixcache doctor``: the set-up checked end to end, each check with its fix."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer

from ..diagnostics.doctor import run_checks
from .common import (
    BaseUrlOption,
    Format,
    FormatOption,
    OutFileOption,
    console,
    handled,
    state,
    write_out,
)


def register(app: typer.Typer) -> None:
    app.command()(handled(doctor))


def doctor(
    ctx: typer.Context,
    base_url: BaseUrlOption = None,
    agent: Annotated[str, typer.Option(help="Agent for the live test.")] = "frontend-engineer",
    fmt: FormatOption = Format.TABLE,
    out: OutFileOption = None,
) -> None:
    """Check the setup end to end (PASS/FAIL with the fix); exit 1 if any check fails."""
    cli = state(ctx)
    checks = run_checks(cli.library, cli.vllm(base_url), agent_type=agent)
    data = json.dumps([asdict(c) for c in checks], indent=2) + "\n"
    if fmt is Format.JSON:
        console.print_json(data) if out is None else None
        write_out(out, data)
    elif fmt is Format.MARKDOWN:
        text = "".join(
            f"- **{c.status}** {c.name}: {c.detail}"
            + (f" (fix: {c.fix})" if c.fix and c.status == "FAIL" else "")
            + "\n"
            for c in checks
        )
        console.print(text, markup=False, highlight=False) if out is None else None
        write_out(out, text)
    else:
        for check in checks:
            colour = {"PASS": "green", "FAIL": "red", "SKIP": "yellow"}[check.status]
            console.print(f"[{colour}]{check.status}[/{colour}] {check.name}: {check.detail}")
            if check.fix and check.status == "FAIL":
                console.print(f"     fix: {check.fix}")
        write_out(out, data)
    if any(c.status == "FAIL" for c in checks):
        raise typer.Exit(1)
