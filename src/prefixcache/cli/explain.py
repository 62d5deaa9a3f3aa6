"""``prefixcache explain``: why each request of a trace missed the prefix cache."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..traces.explain import ExplainReport, explain
from ..traces.render import break_lines, break_title, causes_text, explain_markdown, pct
from ..traces.stabilize import FamilyFix, stabilized_rates
from .common import (
    BaseUrlOption,
    Format,
    FormatOption,
    OutFileOption,
    console,
    err_console,
    handled,
    state,
    write_out,
)
from .trace_input import BlockSize, Labels, TokenizerDir, TraceArg, load_trace


def register(app: typer.Typer) -> None:
    app.command("explain")(handled(explain_cmd))


# -- explain's options: what is reported ---------------------------------------------------

Worst = Annotated[int, typer.Option(min=0, help="Worst breaks shown.")]
MinLost = Annotated[
    int | None,
    typer.Option(min=1, help="Tokens a break must lose to count (default: one block)."),
]
FailUnder = Annotated[
    float | None,
    typer.Option(
        "--fail-under",
        min=0,
        max=100,
        help="Exit 1 if the trace's reusable hit rate is under this many percent (CI).",
    ),
]
Fix = Annotated[
    bool,
    typer.Option(
        "--fix",
        help="Print, per family, the edit the app's code needs (the lines to move, the "
        "list to sort), with the hit rate it would reach.",
    ),
]


def explain_cmd(
    ctx: typer.Context,
    trace: TraceArg,
    base_url: BaseUrlOption = None,
    tokenizer: TokenizerDir = None,
    block_size: BlockSize = None,
    label: Labels = None,
    fmt: FormatOption = Format.TABLE,
    out: OutFileOption = None,
    worst: Worst = 5,
    min_lost: MinLost = None,
    fail_under: FailUnder = None,
    fix: Fix = False,
) -> None:
    """Why each request missed the prefix cache: the first token that differs from the
    request it should have matched, the text there, the cause and the tokens lost; per
    family, the hit rate the gateway's stabilizer would reach."""
    loaded = load_trace(state(ctx), trace, label or [], base_url, tokenizer, block_size)
    records, tokens, block = loaded.records, loaded.tokens, loaded.block_size
    started = time.perf_counter()
    report = explain(records, tokens, block, tokenizer=loaded.tokens_from, min_lost=min_lost)
    report.stabilized, fixes = stabilized_rates(records, tokens, block, loaded.tokenizer)
    report.tokenize_seconds = loaded.tokenize_seconds
    report.analyze_seconds = time.perf_counter() - started
    if fmt is Format.JSON:
        text = json.dumps(report.to_json(worst=max(worst, 20)), indent=2)
        console.print_json(text) if out is None else None
        write_out(out, text + "\n")
    elif fmt is Format.MARKDOWN:
        text = explain_markdown(report, worst)
        console.print(text, markup=False, highlight=False) if out is None else None
        write_out(out, text)
    else:
        _print_explain(report, worst)
        write_out(out, json.dumps(report.to_json(worst=max(worst, 20)), indent=2) + "\n")
    if fix:
        _print_fixes(report, fixes)
    rate = report.total.hit_rate or 0.0
    if fail_under is not None and rate * 100 < fail_under:
        err_console.print(
            f"FAIL: reusable hit rate {rate * 100:.1f}% is under --fail-under {fail_under:g}%"
        )
        raise typer.Exit(1)


def _print_fixes(report: ExplainReport, fixes: dict[str, FamilyFix]) -> None:
    """``--fix``: per family, the edits that make the app stable by itself (after which
    the gateway's stabilizer can be turned off for it)."""
    rates = {f.family: f.hit_rate for f in report.families}
    shown = 0
    for family, fix in sorted(fixes.items()):
        edits = fix.edits()
        if not edits:
            continue
        shown += 1
        after = report.stabilized.get(family)
        console.print(
            f"[bold]{escape(family)}[/bold]: {fix.requests} requests, hit rate "
            f"{pct(rates.get(family))}" + (f" -> {pct(after)} once fixed" if after else ""),
            highlight=False,
        )
        for edit in edits:
            console.print(f"   fix: {edit}", markup=False, highlight=False)
    if not shown:
        console.print("No family needs a fix: no line, list or line end varies before static text.")


def _print_explain(report: ExplainReport, worst: int) -> None:
    total = report.total
    table = Table(
        title=f"Why requests missed the prefix cache: {total.requests} requests, "
        f"{total.prompt_tokens} prompt tokens, block {report.block_size}"
    )
    table.add_column("family", overflow="fold")
    columns = ["requests", "hit rate", "measured", "breaks", "tokens lost", "if fixed"]
    if report.stabilized:
        columns.append("if stabilized")
    for column in columns:
        table.add_column(column, justify="right")
    table.add_column("top causes")
    for f in [*report.families, total]:
        extra = [pct(report.stabilized.get(f.family))] if report.stabilized else []
        table.add_row(
            escape(f.family),
            str(f.requests),
            pct(f.hit_rate),
            pct(f.measured_hit_rate),
            str(f.breaks),
            str(f.tokens_lost),
            pct(f.fixed_hit_rate),
            *extra,
            causes_text(f),
            style="bold" if f is total else None,
        )
    console.print(table)
    for n, b in enumerate(report.worst(worst), 1):
        console.print(f"[bold]{n}. {escape(break_title(b))}[/bold]", highlight=False)
        for line in break_lines(b):
            console.print(f"   {line}", markup=False, highlight=False)
    console.print(
        f"tokens from {report.tokenizer}: {report.tokenize_seconds:.2f} s; analysis "
        f"{report.analyze_seconds:.2f} s",
        highlight=False,
    )
