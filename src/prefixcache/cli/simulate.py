"""``prefixcache simulate`` (a trace replayed through a model of vLLM's prefix cache) and
``prefixcache synth-trace`` (a synthetic trace to replay)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import PrefixCacheError
from ..traces.render import rate_text, simulate_cells, simulate_markdown, versus_text
from ..traces.simulate import Policy, Study, kv_sizes, parse_policies, study
from .common import (
    BaseUrlOption,
    Format,
    FormatOption,
    OutFileOption,
    console,
    csv,
    csv_numbers,
    err_console,
    handled,
    state,
    write_out,
)
from .trace_input import BlockSize, Labels, TokenizerDir, TraceArg, load_trace


def register(app: typer.Typer) -> None:
    app.command("simulate")(handled(simulate_cmd))
    app.command("synth-trace")(handled(synth_trace_cmd))


# -- simulate's options: what the simulated fleet is ------------------------------------

KvBlocks = Annotated[
    list[str] | None,
    typer.Option(
        "--kv-blocks",
        help="KV blocks per replica (repeatable or comma-separated; default: the server's).",
    ),
]
KvGib = Annotated[
    list[str] | None,
    typer.Option(
        "--kv-gib",
        help="KV space per replica in GiB, with --kv-bytes-per-token (repeatable or "
        "comma-separated).",
    ),
]
KvBytesPerToken = Annotated[
    int | None,
    typer.Option(
        "--kv-bytes-per-token",
        min=1,
        help="KV bytes per token: 2 x layers x KV heads x head dim x dtype bytes "
        "(Llama 3 8B in bf16: 131072).",
    ),
]
Replicas = Annotated[int, typer.Option(min=1, help="Replicas.")]
Policies = Annotated[
    list[str] | None,
    typer.Option(
        "--policy",
        help=f"Routing policy (repeatable, comma-separated or 'all'): "
        f"{', '.join(p.value for p in Policy)}.",
    ),
]
PrefillRate = Annotated[
    float | None,
    typer.Option(
        "--prefill-rate",
        min=0.001,
        help="Measured prefill tokens/s per replica (default: from the trace's TTFTs).",
    ),
]
Concurrency = Annotated[
    int,
    typer.Option(
        min=1, help="Requests in flight at once (cache_aware's load: the previous N-1 requests)."
    ),
]


def simulate_cmd(
    ctx: typer.Context,
    trace: TraceArg,
    base_url: BaseUrlOption = None,
    tokenizer: TokenizerDir = None,
    block_size: BlockSize = None,
    label: Labels = None,
    kv_blocks: KvBlocks = None,
    kv_gib: KvGib = None,
    kv_bytes_per_token: KvBytesPerToken = None,
    replicas: Replicas = 1,
    policy: Policies = None,
    prefill_rate: PrefillRate = None,
    seed: Annotated[int, typer.Option(help="Seed of the random policy.")] = 0,
    concurrency: Concurrency = 1,
    fmt: FormatOption = Format.TABLE,
    out: OutFileOption = None,
) -> None:
    """Replay a trace through a model of vLLM's prefix cache (blocks, salts, LRU eviction)
    on N replicas: predicted cached tokens per request, hit rate, prefill saved."""
    blocks_given = csv_numbers(kv_blocks, int, "--kv-blocks", 2)
    gib_given = csv_numbers(kv_gib, float, "--kv-gib", 0.001)
    try:
        policies = parse_policies(csv(policy))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--policy") from None
    loaded = load_trace(state(ctx), trace, label or [], base_url, tokenizer, block_size)
    try:
        sizes = kv_sizes(
            kv_blocks_per_replica=blocks_given,
            kv_gib=gib_given,
            kv_bytes_per_token=kv_bytes_per_token,
            block_size=loaded.block_size,
            server_blocks=loaded.server_blocks,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        result = study(
            loaded.records,
            loaded.tokens,
            trace=str(trace),
            tokens_from=loaded.tokens_from,
            block_size=loaded.block_size,
            sizes=sizes,
            policies=policies,
            replicas=replicas,
            seed=seed,
            concurrency=concurrency,
            prefill_rate=prefill_rate,
        )
    except MemoryError as exc:
        raise PrefixCacheError(str(exc)) from None
    data = json.dumps(result.to_json(), indent=2)
    if fmt is Format.JSON:
        console.print_json(data) if out is None else None
        write_out(out, data + "\n")
    elif fmt is Format.MARKDOWN:
        text = simulate_markdown(result)
        console.print(text, markup=False, highlight=False) if out is None else None
        write_out(out, text)
    else:
        _print_simulate(result)
        write_out(out, data + "\n")


def _print_simulate(result: Study) -> None:
    first = result.reports[0]
    table = Table(
        title=f"Prefix cache simulation: {result.requests} requests, {first.replicas} "
        f"replica(s), block {first.block_size}"
    )
    rows = [simulate_cells(r, result.prefill_rate) for r in result.reports]
    for column in rows[0]:
        table.add_column(column, justify="left" if column == "policy" else "right")
    for cells in rows:
        table.add_row(*cells.values())
    console.print(table)
    text = rate_text(result.prefill_rate, result.prefill_rate_source)
    if not result.prefill_rate:
        text += " (--prefill-rate, or a trace with ttft)"
    console.print(f"prefill rate: {text}", highlight=False)
    if result.versus is not None:
        console.print(versus_text(result.versus), highlight=False)


def synth_trace_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="The JSONL trace to write.")],
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
    from ..traces.records import save_trace
    from ..traces.synth import SynthSettings, synth_trace

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
