"""What every command group shares: the consoles, the loaded settings, option types."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import typer
from rich.console import Console

from ..errors import ConfigError, PrefixCacheError
from ..prompts.library import PromptLibrary
from ..settings import Settings, VLLMConfig, load_settings

# Wide enough for the report tables when output goes to a pipe or a CI log.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


@dataclass
class CliState:
    """The root options, and the settings loaded from them once, on first use."""

    config: Path | None
    _settings: Settings | None = field(default=None, repr=False)
    _library: PromptLibrary | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config)
        return self._settings

    @property
    def library(self) -> PromptLibrary:
        if self._library is None:
            self._library = PromptLibrary(self.settings)
        return self._library

    def vllm(self, base_url: str | None = None, **overrides: Any) -> VLLMConfig:
        cfg = self.settings.llm.vllm
        changes = {k: v for k, v in overrides.items() if v is not None}
        if base_url:
            changes["base_url"] = base_url
        if not changes:
            return cfg
        try:
            return cfg.with_overrides(**changes)
        except ConfigError as exc:  # the values came from options: a usage error
            message = str(exc).replace("Invalid configuration", "Invalid option value")
            raise typer.BadParameter(message) from None


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    if not isinstance(obj, CliState):  # a command invoked without the root app (tests)
        obj = ctx.find_root().obj = CliState(None)
    return obj


# -- options that mean the same on every command ------------------------------------------

_BASE_URL_HELP = "A running vLLM server or vllm-router (default: llm.vllm in the config)."
BaseUrlOption = Annotated[str | None, typer.Option("--base-url", help=_BASE_URL_HELP)]
BaseUrlsOption = Annotated[
    list[str] | None,
    typer.Option("--base-url", help=_BASE_URL_HELP + " Repeatable, or comma-separated."),
]


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"
    MARKDOWN = "markdown"


FormatOption = Annotated[
    Format, typer.Option("--format", help="table (for the terminal), json or markdown.")
]
OutFileOption = Annotated[
    Path | None,
    typer.Option(
        "--out", help="Also write the report to this file (as --format, JSON for a table)."
    ),
]


def write_out(out: Path | None, text: str) -> None:
    """``--out FILE``: write ``text`` there (its folder created) and say so on stderr."""
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        err_console.print(f"written: {out}")


def short_tier(tier: str) -> str:
    """``TIER_2_ANALYSIS`` -> ``2 analysis`` (keeps report tables narrow)."""
    parts = tier.lower().split("_")
    return f"{parts[1]} {parts[2]}" if len(parts) >= 3 else tier


def csv(values: list[str] | None) -> list[str]:
    """Every list option is repeatable and takes commas: ``["a,b", "c"]`` -> ``["a", "b", "c"]``."""
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


N = TypeVar("N", int, float)


def csv_numbers(values: list[str] | None, kind: type[N], option: str, minimum: N) -> list[N]:
    """A list option of numbers (repeatable, comma-separated); a usage error names it."""
    try:
        numbers = [kind(v) for v in csv(values)]
    except ValueError:
        raise typer.BadParameter(
            f"takes {kind.__name__}s (repeatable or comma-separated), got {values}",
            param_hint=option,
        ) from None
    if any(n < minimum for n in numbers):
        raise typer.BadParameter(f"every value must be at least {minimum}", param_hint=option)
    return numbers


F = TypeVar("F", bound=Callable[..., Any])


def handled(command: F) -> F:
    """A ``PrefixCacheError`` from a command prints ``error: ...`` and exits 1 (a runtime
    failure); usage errors stay typer's (exit 2)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except PrefixCacheError as exc:
            err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return cast(F, wrapper)
