"""The ``prefixcache`` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ._analysis import prompt_sizes
from ._config import load_settings
from ._exceptions import PrefixCacheError
from ._library import PromptLibrary
from ._lint import lint_paths

app = typer.Typer(
    help="Cache-stable prompts for vLLM prefix caching: build them, lint them, measure them.",
    no_args_is_help=True,
    add_completion=False,
)
prompts_app = typer.Typer(help="Discover the prompts of the registry.", no_args_is_help=True)
app.add_typer(prompts_app, name="prompts")

# Wide enough for the report tables when output goes to a pipe or a CI log.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", help="Config file (default: $PREFIXCACHE_CONFIG or config/config.yaml)."
    ),
]


def _library(config: Path | None) -> PromptLibrary:
    return PromptLibrary(load_settings(config))


@app.command()
def lint(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Prompt files or folders (default: the configured prompt directories)."
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Find what would break prefix caching in static prompts; exit 1 on findings."""
    targets = paths or [d for d in _library(config).registry.directories if d.is_dir()]
    try:
        findings = lint_paths(targets)
    except FileNotFoundError as exc:
        err_console.print(f"error: {exc}")
        raise typer.Exit(2) from exc
    for finding in findings:
        typer.echo(str(finding))
    if findings:
        err_console.print(f"{len(findings)} finding(s): move volatile text to the dynamic suffix.")
        raise typer.Exit(1)
    err_console.print(f"clean: {', '.join(map(str, targets))}")


@prompts_app.command("list")
def prompts_list(config: ConfigOption = None) -> None:
    """List every prompt key and the file that serves it."""
    registry = _library(config).registry
    for key, path in registry.files():
        typer.echo(f"{key}\t{path}")


@prompts_app.command("show")
def prompts_show(
    key: Annotated[str, typer.Argument(help="Dotted prompt key, e.g. default.agent.system.main")],
    raw: Annotated[
        bool, typer.Option(help="Print the template source instead of rendering it.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Print one prompt, rendered (or raw)."""
    registry = _library(config).registry
    typer.echo(registry.source(key) if raw else registry.render(key), nl=False)


@app.command("analyze-prompts")
def analyze_prompts(
    agent: Annotated[
        list[str] | None,
        typer.Option("--agent", "-a", help="Agent type (repeatable; default all)."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Per agent: characters in each static layer, the static prefix and a typical suffix."""
    library = _library(config)
    table = Table(title="Static layers per agent (characters; typical call for the suffix)")
    for column in ("agent", "tier", "base prompt"):
        table.add_column(column)
    for column in ("base", "tier block", "role", "static", "dynamic", "static %"):
        table.add_column(column, justify="right")
    for name in agent or library.tiers.agents():
        s = prompt_sizes(library, name)
        table.add_row(
            s.agent_type,
            s.tier,
            s.base_prompt_key,
            str(s.base),
            str(s.tier_block),
            str(s.role),
            str(s.static),
            str(s.dynamic),
            f"{s.static_share:.1%}",
        )
    console.print(table)
    console.print("Characters, not tokens: `prefixcache analyze` measures tokens on a live server.")


def main() -> None:
    try:
        app()
    except PrefixCacheError as exc:
        err_console.print(f"error: {exc}")
        raise SystemExit(2) from exc
