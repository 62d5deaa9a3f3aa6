"""``prefixcache lint``, ``prefixcache prompts list|show`` and ``analyze-prompts``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import PromptRenderError
from ..prompts.lint import lint_paths
from ..prompts.registry import PromptRegistry
from ..prompts.sizes import prompt_sizes
from .common import console, csv, err_console, handled, short_tier, state


def register(app: typer.Typer) -> None:
    prompts_app = typer.Typer(help="Discover the prompts of the registry.", no_args_is_help=True)
    app.add_typer(prompts_app, name="prompts")
    app.command()(handled(lint))
    prompts_app.command("list")(handled(prompts_list))
    prompts_app.command("show")(handled(prompts_show))
    app.command("analyze-prompts")(handled(analyze_prompts))


def lint(
    ctx: typer.Context,
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Prompt files or folders (default: the configured prompt directories)."
        ),
    ] = None,
) -> None:
    """Find what would break prefix caching in static prompts; exit 1 on findings."""
    for path in paths or []:
        if not os.path.lexists(path):
            raise typer.BadParameter(f"{path} does not exist", param_hint="PATHS")
    targets = paths or [d for d in state(ctx).library.registry.directories if d.is_dir()]
    findings = lint_paths(targets)
    for finding in findings:
        typer.echo(str(finding))
    if findings:
        err_console.print(f"{len(findings)} finding(s): move volatile text to the dynamic suffix.")
        raise typer.Exit(1)
    err_console.print(f"clean: {', '.join(map(str, targets))}")


def prompts_list(ctx: typer.Context) -> None:
    """List every prompt key and the file that serves it; exit 1 if some could not be used."""
    # built from the settings directly, so that one bad folder does not hide the rest
    registry = PromptRegistry(state(ctx).settings.prompt_dirs)
    for key, path in registry.files():
        typer.echo(f"{key}\t{path}")
    problems = registry.problems()
    for problem in problems:
        err_console.print(f"error: {problem}", markup=False, highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)


def prompts_show(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Dotted prompt key, e.g. default.agent.system.main")],
    raw: Annotated[
        bool, typer.Option(help="Print the template source instead of rendering it.")
    ] = False,
) -> None:
    """Print one prompt, rendered (or raw)."""
    registry = state(ctx).library.registry
    if raw:
        typer.echo(registry.source(key), nl=False)
        return
    try:
        typer.echo(registry.render(key), nl=False)
    except PromptRenderError as exc:
        raise PromptRenderError(
            f"{exc} To see the template itself: prefixcache prompts show --raw {key}"
        ) from exc


def analyze_prompts(
    ctx: typer.Context,
    agent: Annotated[
        list[str] | None,
        typer.Option(
            "--agent", "-a", help="Agent type (repeatable or comma-separated; default all)."
        ),
    ] = None,
) -> None:
    """Per agent: characters in each static layer, the static prefix and a typical suffix."""
    library = state(ctx).library
    table = Table(title="Static layers per agent (characters; typical call for the suffix)")
    for column in ("agent", "tier", "base prompt"):
        table.add_column(column, no_wrap=True)
    for column in ("base", "tier block", "role", "static", "dynamic", "static %"):
        table.add_column(column, justify="right")
    for name in csv(agent) or library.tiers.agents():
        s = prompt_sizes(library, name)
        table.add_row(
            s.agent_type,
            short_tier(s.tier),
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
