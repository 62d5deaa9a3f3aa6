"""``prefixcache explain`` (why requests missed the cache) and ``prefixcache simulate``
(what a workload would hit on a fleet), both over a JSONL request trace."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..analysis.explain import ExplainReport, explain
from ..analysis.render import break_lines, break_title, causes_text, explain_markdown, pct
from ..analysis.simulate import (
    Policy,
    SimReport,
    Versus,
    kv_blocks,
    prefill_rate_from,
    requests_from_trace,
    simulate,
    versus_measured,
)
from ..analysis.stabilize import CHARS_PER_TOKEN, FamilyFix, stabilize_trace
from ..analysis.tokenize import ChatTokenizer, LocalTokenizer, ServerTokenizer, tokenize_trace
from ..engine.embedded_model import embedded_model_dir, is_prepared
from ..errors import PrefixCacheError
from ..llm.inspector import EngineInspector
from ..llm.trace import TraceRecord, read_trace
from .common import CliState, console, err_console, handled, state


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"
    MARKDOWN = "markdown"


def register(app: typer.Typer) -> None:
    app.command("explain")(handled(explain_cmd))
    app.command("simulate")(handled(simulate_cmd))
    app.command("synth-trace")(handled(synth_trace_cmd))


TraceArg = Annotated[Path, typer.Argument(help="A JSONL trace of chat requests.")]
BaseUrl = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        help="A vLLM server: tokenize with its /tokenize and read its block size (and KV "
        "blocks) from /metrics.",
    ),
]
TokenizerDir = Annotated[
    Path | None,
    typer.Option(
        "--tokenizer",
        help="A model folder to tokenize with locally (default without --base-url: the "
        "embedded model).",
    ),
]
BlockSize = Annotated[
    int | None,
    typer.Option(
        "--block-size", min=1, help="KV block size in tokens (default: the server's, else 16)."
    ),
]
Labels = Annotated[
    list[str] | None,
    typer.Option(
        "--label", help="Only records with this label, KEY=VALUE (repeatable), e.g. arm=naive."
    ),
]
FormatOpt = Annotated[Format, typer.Option("--format", help="table, json or markdown.")]
OutOpt = Annotated[
    Path | None, typer.Option("--out", help="Also write the JSON (or Markdown) report here.")
]


def _filter(records: list[TraceRecord], labels: Sequence[str]) -> list[TraceRecord]:
    wanted: dict[str, str] = {}
    for item in labels:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--label takes KEY=VALUE (got {item!r})")
        wanted[key] = value
    if not wanted:
        return records
    kept = [r for r in records if all((r.labels or {}).get(k) == v for k, v in wanted.items())]
    if not kept:
        raise PrefixCacheError(
            f"No record of the trace has the labels {wanted}; labels seen: "
            f"{sorted({f'{k}={v}' for r in records for k, v in (r.labels or {}).items()})[:12]}"
        )
    return kept


def _tokenizer(
    cli: CliState, base_url: str | None, tokenizer: Path | None
) -> tuple[ChatTokenizer | None, int | None, int | None]:
    """The tokenizer to use, and the server's block size and KV blocks when one is given."""
    if base_url:
        cfg = cli.vllm(base_url)
        with EngineInspector(cfg.url, cfg.model_name(), cfg.api_key) as inspector:
            stats = inspector.cache_stats()
        source: ChatTokenizer = (
            LocalTokenizer(tokenizer)
            if tokenizer
            else ServerTokenizer(cfg.url, cfg.model_name(), api_key=cfg.api_key)
        )
        return source, stats.block_size, stats.num_blocks
    folder = tokenizer
    if folder is None:
        folder = embedded_model_dir(cli.settings.llm.vllm.model_cache_dir)
        if not is_prepared(folder):
            return None, None, None  # fine if the trace carries token ids
    return LocalTokenizer(folder), None, None


def _load(
    cli: CliState,
    trace: Path,
    labels: Sequence[str],
    base_url: str | None,
    tokenizer: Path | None,
    block_size: int | None,
) -> tuple[list[TraceRecord], list[list[int]], float, int, int | None, str]:
    records, tokens, seconds, block, blocks, _source, name = _load_with(
        cli, trace, labels, base_url, tokenizer, block_size
    )
    return records, tokens, seconds, block, blocks, name


def _load_with(
    cli: CliState,
    trace: Path,
    labels: Sequence[str],
    base_url: str | None,
    tokenizer: Path | None,
    block_size: int | None,
) -> tuple[list[TraceRecord], list[list[int]], float, int, int | None, ChatTokenizer | None, str]:
    records = _filter(read_trace(trace), labels)
    source, server_block, server_blocks = _tokenizer(cli, base_url, tokenizer)
    tokens, seconds = tokenize_trace(records, source)
    block = block_size or server_block or 16
    name = source.name if source else "trace"
    return records, tokens, seconds, block, server_blocks, source, name


def _stabilized(
    records: Sequence[TraceRecord],
    tokens: Sequence[list[int]],
    block: int,
    source: ChatTokenizer | None,
) -> tuple[dict[str, float | None], dict[str, FamilyFix]]:
    """Per family: the hit rate had the gateway's stabilizer sent the trace, and what it
    moved (no figure when a rewritten request cannot be tokenized)."""
    stable, fixes = stabilize_trace(records, block * CHARS_PER_TOKEN)
    changed = [i for i, (a, b) in enumerate(zip(records, stable, strict=True)) if a is not b]
    if not changed:
        return {}, fixes
    if source is None or any(r.prompt_token_ids is not None for r in records):
        return {}, fixes  # the trace's own ids: a rewrite cannot be tokenized the same way
    encoded = source.encode_chats([stable[i].messages for i in changed])
    stable_tokens = [list(t) for t in tokens]
    for i, ids in zip(changed, encoded, strict=True):
        stable_tokens[i] = ids
    report = explain(stable, stable_tokens, block)
    return {f.family: f.hit_rate for f in report.families}, fixes


def _write(out: Path | None, text: str) -> None:
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        err_console.print(f"written: {out}")


# -- explain ---------------------------------------------------------------------------


def explain_cmd(
    ctx: typer.Context,
    trace: TraceArg,
    base_url: BaseUrl = None,
    tokenizer: TokenizerDir = None,
    block_size: BlockSize = None,
    label: Labels = None,
    fmt: FormatOpt = Format.TABLE,
    out: OutOpt = None,
    worst: Annotated[int, typer.Option(min=0, help="Worst breaks shown.")] = 5,
    min_lost: Annotated[
        int | None,
        typer.Option(min=1, help="Tokens a break must lose to count (default: one block)."),
    ] = None,
    fail_under: Annotated[
        float | None,
        typer.Option(
            "--fail-under",
            min=0,
            max=100,
            help="Exit 1 if the trace's reusable hit rate is under this many percent (CI).",
        ),
    ] = None,
    fix: Annotated[
        bool,
        typer.Option(
            "--fix",
            help="Print, per family, the edit the app's code needs (the lines to move, the "
            "list to sort), with the hit rate it would reach.",
        ),
    ] = False,
) -> None:
    """Why each request missed the prefix cache: the first token that differs from the
    request it should have matched, the text there, the cause and the tokens lost; per
    family, the hit rate the gateway's stabilizer would reach."""
    cli = state(ctx)
    records, tokens, tok_s, block, _blocks, tokenizer_used, source = _load_with(
        cli, trace, label or [], base_url, tokenizer, block_size
    )
    started = time.perf_counter()
    report = explain(records, tokens, block, tokenizer=source, min_lost=min_lost)
    report.stabilized, fixes = _stabilized(records, tokens, block, tokenizer_used)
    report.tokenize_seconds = tok_s
    report.analyze_seconds = time.perf_counter() - started
    if fmt is Format.JSON:
        text = json.dumps(report.to_json(worst=max(worst, 20)), indent=2)
        console.print_json(text) if out is None else None
        _write(out, text + "\n")
    elif fmt is Format.MARKDOWN:
        text = explain_markdown(report, worst)
        console.print(text, markup=False, highlight=False) if out is None else None
        _write(out, text)
    else:
        _print_explain(report, worst)
        _write(out, json.dumps(report.to_json(worst=max(worst, 20)), indent=2) + "\n")
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


# -- simulate --------------------------------------------------------------------------


def simulate_cmd(
    ctx: typer.Context,
    trace: TraceArg,
    base_url: BaseUrl = None,
    tokenizer: TokenizerDir = None,
    block_size: BlockSize = None,
    label: Labels = None,
    kv_blocks_opt: Annotated[
        list[int] | None,
        typer.Option(
            "--kv-blocks",
            min=2,
            help="KV blocks per replica (repeatable; default: the server's).",
        ),
    ] = None,
    kv_gib: Annotated[
        list[float] | None,
        typer.Option(
            "--kv-gib",
            min=0.001,
            help="KV space per replica in GiB, with --kv-bytes-per-token (repeatable).",
        ),
    ] = None,
    kv_bytes_per_token: Annotated[
        int | None,
        typer.Option(
            "--kv-bytes-per-token",
            min=1,
            help="KV bytes per token: 2 x layers x KV heads x head dim x dtype bytes "
            "(Llama 3 8B in bf16: 131072).",
        ),
    ] = None,
    replicas: Annotated[int, typer.Option(min=1, help="Replicas.")] = 1,
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            help=f"Routing policy (repeatable or 'all'): {', '.join(p.value for p in Policy)}.",
        ),
    ] = None,
    prefill_rate: Annotated[
        float | None,
        typer.Option(
            "--prefill-rate",
            min=0.001,
            help="Measured prefill tokens/s per replica (default: from the trace's TTFTs).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random policy.")] = 0,
    concurrency: Annotated[
        int,
        typer.Option(
            min=1,
            help="Requests in flight at once (cache_aware's load: the previous N-1 requests).",
        ),
    ] = 1,
    fmt: FormatOpt = Format.TABLE,
    out: OutOpt = None,
) -> None:
    """Replay a trace through a model of vLLM's prefix cache (blocks, salts, LRU eviction)
    on N replicas: predicted cached tokens per request, hit rate, prefill saved."""
    cli = state(ctx)
    records, tokens, _tok_s, block, server_blocks, source = _load(
        cli, trace, label or [], base_url, tokenizer, block_size
    )
    sizes: list[int] = list(kv_blocks_opt or [])
    if kv_gib:
        if kv_bytes_per_token is None:
            raise typer.BadParameter("--kv-gib needs --kv-bytes-per-token")
        sizes += [
            kv_blocks(kv_bytes=g * 2**30, bytes_per_token=kv_bytes_per_token, block_size=block)
            for g in kv_gib
        ]
    if not sizes and server_blocks:
        sizes = [server_blocks]
    if not sizes:
        raise typer.BadParameter(
            "Give the KV space: --kv-blocks N, or --kv-gib G with --kv-bytes-per-token B, or "
            "--base-url of a server to read it from."
        )
    names = [p for item in policy or ["round_robin"] for p in item.split(",") if p.strip()]
    if "all" in names:
        names = [p.value for p in Policy]
    try:
        policies = [Policy(p.strip()) for p in names]
    except ValueError:
        raise typer.BadParameter(
            f"--policy: one of {', '.join(p.value for p in Policy)} or all (got {names})"
        ) from None
    if replicas == 1:
        policies = policies[:1]
    requests = requests_from_trace(records, tokens)
    rate = prefill_rate or prefill_rate_from(records)
    try:
        reports = [
            simulate(
                requests,
                block_size=block,
                num_blocks=blocks,
                replicas=replicas,
                policy=p,
                seed=seed,
                concurrency=concurrency,
            )
            for blocks in sizes
            for p in policies
        ]
    except MemoryError as exc:
        raise PrefixCacheError(str(exc)) from None
    versus = (
        versus_measured(reports[0], [r.cached_tokens for r in records]) if replicas == 1 else None
    )
    data = {
        "trace": str(trace),
        "tokens_from": source,
        "requests": len(records),
        "prefill_tokens_per_s": rate,
        "prefill_rate_source": "option" if prefill_rate else ("trace" if rate else None),
        "runs": [r.to_json(rate) for r in reports],
        "measured": versus.to_json() if versus else None,
    }
    if fmt is Format.JSON:
        text = json.dumps(data, indent=2)
        console.print_json(text) if out is None else None
        _write(out, text + "\n")
        return
    text = simulate_markdown(data, reports, rate, versus)
    if fmt is Format.MARKDOWN:
        console.print(text, markup=False, highlight=False) if out is None else None
        _write(out, text)
        return
    _print_simulate(reports, rate, data, versus)
    _write(out, json.dumps(data, indent=2) + "\n")


def _cells(r: SimReport, rate: float | None) -> dict[str, str]:
    """One simulation's figures as the table's and the Markdown's cells."""
    s = r.savings(rate)
    return {
        "KV blocks": f"{r.num_blocks:,}",
        "policy": r.policy.value if r.replicas > 1 else "one replica",
        "hit rate": pct(r.hit_rate),
        "prefill tokens saved": f"{r.cached_tokens:,}",
        "GPU-s saved": "-" if s["gpu_seconds_saved"] is None else f"{s['gpu_seconds_saved']:.1f}",
        "TTFT saved/req": "-"
        if s["ttft_saved_mean_s"] is None
        else f"{s['ttft_saved_mean_s'] * 1000:.0f} ms",
        "per replica": "/".join(str(n) for n in r.per_replica_requests),
        "balance": "-" if r.balance is None else f"{r.balance:.2f}",
        "evictions": f"{sum(r.evictions):,}",
    }


def _rate_text(rate: float | None, source: object) -> str:
    return f"{rate:,.0f} tokens/s ({source})" if rate else "not given"


def _versus_text(versus: Versus) -> str:
    return (
        f"against the trace's measured cached tokens: {versus.equal}/{versus.requests} "
        f"requests equal; hit rate predicted {pct(versus.predicted_hit_rate)} vs measured "
        f"{pct(versus.measured_hit_rate)}"
    )


#: the Markdown's columns (the terminal table adds requests per replica)
MARKDOWN_COLUMNS = (
    "KV blocks",
    "policy",
    "hit rate",
    "prefill tokens saved",
    "GPU-s saved",
    "TTFT saved/req",
    "balance",
    "evictions",
)


def simulate_markdown(
    data: dict[str, object],
    reports: Sequence[SimReport],
    rate: float | None,
    versus: Versus | None,
) -> str:
    first = reports[0]
    lines = [
        f"Simulated {data['requests']} requests: {first.replicas} replica(s), block "
        f"{first.block_size}, prefill rate {_rate_text(rate, data['prefill_rate_source'])}",
        "",
        "| KV blocks per replica | policy | hit rate | prefill tokens saved | GPU-s saved "
        "| TTFT saved/request | balance | evictions |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in reports:
        cells = _cells(r, rate)
        lines.append("| " + " | ".join(cells[c] for c in MARKDOWN_COLUMNS) + " |")
    if versus is not None:
        text = _versus_text(versus)
        lines += ["", text[0].upper() + text[1:] + "."]
    return "\n".join(lines) + "\n"


def _print_simulate(
    reports: Sequence[SimReport],
    rate: float | None,
    data: dict[str, object],
    versus: Versus | None,
) -> None:
    first = reports[0]
    table = Table(
        title=f"Prefix cache simulation: {data['requests']} requests, {first.replicas} "
        f"replica(s), block {first.block_size}"
    )
    rows = [_cells(r, rate) for r in reports]
    for column in rows[0]:
        table.add_column(column, justify="left" if column == "policy" else "right")
    for cells in rows:
        table.add_row(*cells.values())
    console.print(table)
    text = _rate_text(rate, data["prefill_rate_source"])
    if not rate:
        text += " (--prefill-rate, or a trace with ttft)"
    console.print(f"prefill rate: {text}", highlight=False)
    if versus is not None:
        console.print(_versus_text(versus), highlight=False)


def synth_trace_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="The JSONL trace to write.")],
    sessions: Annotated[int, typer.Option(min=1, help="Sessions (one user, one agent).")] = 1000,
    turns: Annotated[int, typer.Option(min=1, help="Turns per session.")] = 4,
    concurrency: Annotated[
        int, typer.Option(min=1, help="Sessions in flight at once (turns interleave).")
    ] = 64,
    reply_words: Annotated[int, typer.Option(min=1, help="Words per assistant reply.")] = 120,
    attachment_words: Annotated[
        int, typer.Option(min=0, help="Words of attached material per user turn.")
    ] = 0,
    layout: Annotated[
        str, typer.Option(help="optimized (compose_prompt) or naive (dynamic context first).")
    ] = "optimized",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write a synthetic trace of the guide's agents (every agent type, many sessions,
    multi-turn) for `prefixcache simulate` projections; nothing is sent anywhere."""
    from ..bench.synth import SynthSettings, synth_trace
    from ..llm.trace import save_trace

    if layout not in ("optimized", "naive"):
        raise typer.BadParameter(f"--layout: optimized or naive (got {layout!r})")
    settings = SynthSettings(
        sessions=sessions,
        turns=turns,
        concurrency=concurrency,
        reply_words=reply_words,
        attachment_words=attachment_words,
        layout=layout,  # type: ignore[arg-type]
        seed=seed,
    )
    records = synth_trace(state(ctx).library, settings)
    save_trace(out, records)
    agents = len({r.agent for r in records})
    err_console.print(
        f"wrote {len(records)} requests ({sessions} sessions, {agents} agents) to {out}"
    )
