"""The root ``prefixcache`` app: ``--config`` is declared here once, loaded once, and
passed to every command through the click context."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from . import analyze, doctor, engine, explain, prompts, serve, simulate
from . import bench as bench_cmd
from .common import CliState

app = typer.Typer(
    help="Cache-stable prompts for vLLM prefix caching: build them, lint them, measure them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Config file (default: $PREFIXCACHE_CONFIG, then ./config/config.yaml, then "
            "built-in defaults). Give it before the command: prefixcache --config F lint.",
        ),
    ] = None,
) -> None:
    ctx.obj = CliState(config)


prompts.register(app)
engine.register(app)
analyze.register(app)
doctor.register(app)
bench_cmd.register(app)
serve.register(app)
explain.register(app)
simulate.register(app)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # SystemExit unwinds `with LocalEngine(...)` blocks, so an engine this process started
    # is stopped by PID even when the command is terminated.
    raise SystemExit(128 + signum)


def hoist_config(args: list[str]) -> list[str]:
    """``prefixcache engine start --config F`` -> ``prefixcache --config F engine start``.

    ``--config`` is one option of the root app; this lets it also be written after the
    command, as it was in 0.1 and as users type it."""
    out: list[str] = []
    hoisted: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out += args[i:]
            break
        if arg == "--config" and i + 1 < len(args):
            hoisted += args[i : i + 2]
            i += 2
            continue
        if arg.startswith("--config="):
            hoisted.append(arg)
        else:
            out.append(arg)
        i += 1
    return hoisted + out


def run() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    app(args=hoist_config(sys.argv[1:]), prog_name="prefixcache")
