"""What ``explain`` and ``simulate`` share: reading a trace, choosing its tokenizer, and
the options for both."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from ..engine.embedded_model import embedded_model_dir, is_prepared
from ..errors import PrefixCacheError
from ..llm.inspector import EngineInspector
from ..traces.records import TraceRecord, read_trace
from ..traces.tokenize import ChatTokenizer, LocalTokenizer, ServerTokenizer, tokenize_trace
from .common import CliState, csv

TraceArg = Annotated[Path, typer.Argument(help="A JSONL trace of chat requests.")]
TokenizerDir = Annotated[
    Path | None,
    typer.Option(
        "--tokenizer",
        help="A model folder to tokenize with locally (default without --base-url: the "
        "embedded model; with it, the server's /tokenize).",
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
        "--label",
        help="Only records with this label, KEY=VALUE (repeatable or comma-separated), "
        "e.g. arm=naive.",
    ),
]


@dataclass
class LoadedTrace:
    """A trace's records with their token ids, and where the ids and block size came from."""

    records: list[TraceRecord]
    tokens: list[list[int]]
    tokenize_seconds: float
    block_size: int
    server_blocks: int | None  # the server's KV blocks, when --base-url was given
    tokenizer: ChatTokenizer | None
    tokens_from: str


def _filter(records: list[TraceRecord], labels: Sequence[str]) -> list[TraceRecord]:
    wanted: dict[str, str] = {}
    for item in csv(list(labels)):
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


def load_trace(
    cli: CliState,
    trace: Path,
    labels: Sequence[str],
    base_url: str | None,
    tokenizer: Path | None,
    block_size: int | None,
) -> LoadedTrace:
    """Read ``trace`` (only the records with ``labels``) and tokenize it."""
    records = _filter(read_trace(trace), labels)
    source, server_block, server_blocks = _tokenizer(cli, base_url, tokenizer)
    tokens, seconds = tokenize_trace(records, source)
    block = block_size or server_block or 16
    name = source.name if source else "trace"
    return LoadedTrace(records, tokens, seconds, block, server_blocks, source, name)
