"""``prefixcache serve``, ``prefixcache keys create|list|revoke`` and ``export-trace``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ..errors import PrefixCacheError
from .common import BaseUrlOption, csv, err_console, handled, state


def register(app: typer.Typer) -> None:
    app.command()(handled(serve))
    keys_app = typer.Typer(help="API keys of the service.", no_args_is_help=True)
    app.add_typer(keys_app, name="keys")
    keys_app.command("create")(handled(keys_create))
    keys_app.command("list")(handled(keys_list))
    keys_app.command("revoke")(handled(keys_revoke))
    app.command("export-trace")(handled(export_trace))


def _require_service() -> None:
    from .._extras import require

    require("service", "prefixcache serve")


def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Address (default: service.host, 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default: service.port).")
    ] = None,
    base_url: BaseUrlOption = None,
) -> None:
    """Run the service: /chat, /tasks, the OpenAI-compatible /v1 gateway, /sessions,
    /stats, /metrics, /health, /ready; OpenAPI docs at /docs."""
    _require_service()
    import uvicorn

    from ..service.app import create_app
    from ..service.db import display_url
    from ..service.migrate import upgrade_database
    from ..service.state import build_state

    cli = state(ctx)
    settings = cli.settings
    if base_url:
        llm = settings.llm.model_copy(update={"vllm": cli.vllm(base_url)})
        settings = settings.model_copy(update={"llm": llm})
    service = settings.service
    url = service.resolved_database_url()
    _database_step(url, lambda: upgrade_database(url))  # once per start, under a lock
    err_console.print(f"database: {display_url(url)}")
    err_console.print(f"vLLM: {settings.llm.vllm.url}   isolation: {service.cache_isolation}")
    built = build_state(settings)  # a bad secret or database URL stops here, clearly
    uvicorn.run(
        create_app(settings, built, migrate=False),
        host=host or service.host,
        port=port or service.port,
        log_level="info",
        access_log=True,
        timeout_graceful_shutdown=10,
    )


T = TypeVar("T")


def _database_step(url: str, step: Callable[[], T]) -> T:
    """Run a database step; a database fault is a clear error (exit 1), its URL masked."""
    from sqlalchemy.exc import SQLAlchemyError

    from ..service.db import display_url

    try:
        return step()
    except (SQLAlchemyError, OSError) as exc:
        raise PrefixCacheError(
            f"The service database at {display_url(url)} failed: "
            f"{str(exc).splitlines()[0]}. Check service.database_url and that the file's "
            "folder or the server is reachable and writable."
        ) from exc


async def _with_db(
    ctx: typer.Context, action: Callable[[Any], Awaitable[T]], *, migrate: bool = True
) -> T:
    """Open the database (its folder created, mode 0700), upgrade the schema unless
    ``migrate`` is off (then a database without the schema is a clear error), run
    ``action``."""
    from sqlalchemy.exc import SQLAlchemyError

    from ..service.db import create_engine, display_url, session_factory
    from ..service.migrate import schema_is_current, upgrade_database

    url = state(ctx).settings.service.resolved_database_url()
    if migrate:
        await asyncio.to_thread(_database_step, url, lambda: upgrade_database(url))
    elif not await asyncio.to_thread(_database_step, url, lambda: schema_is_current(url)):
        raise PrefixCacheError(
            f"The service database at {display_url(url)} has no current schema yet: create "
            "a key first (`prefixcache keys create`) or start `prefixcache serve`, which "
            "create and upgrade it."
        )
    try:
        engine = create_engine(url)
        try:
            async with session_factory(engine)() as db:
                return await action(db)
        finally:
            await engine.dispose()
    except SQLAlchemyError as exc:
        raise PrefixCacheError(
            f"The service database at {display_url(url)} failed: {str(exc).splitlines()[0]}. "
            "Check service.database_url and that the file or server is writable."
        ) from exc


def keys_create(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option(help="The tenant (an organisation or team).")],
    user: Annotated[str, typer.Option(help="The user within the tenant.")],
    tools: Annotated[
        list[str] | None,
        typer.Option(
            help="Tools this user may use (repeatable or comma-separated; default: every "
            "agent tool)."
        ),
    ] = None,
    admin: Annotated[
        bool,
        typer.Option(
            "--admin",
            help="The key sees every user's prompt text and the engine-wide figures on the "
            "dashboard.",
        ),
    ] = False,
) -> None:
    """Create an API key; it is printed once and only its hash is stored."""
    _require_service()
    from ..service.auth import check_name, create_key

    try:
        check_name("tenant", tenant)
        check_name("user", user)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    allowed = csv(tools) if tools else None
    key = asyncio.run(_with_db(ctx, lambda db: create_key(db, tenant, user, allowed, admin)))
    typer.echo(key)
    err_console.print(
        f"created a key for {tenant}/{user}; it is shown only now: keep it secret, send it as "
        "'Authorization: Bearer <key>'"
    )


def keys_list(ctx: typer.Context) -> None:
    """Key ids, owners and states (never the keys)."""
    _require_service()
    from ..service.auth import list_keys

    for row in asyncio.run(_with_db(ctx, list_keys, migrate=False)):
        status = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
        tools = ",".join(row.tools) if row.tools is not None else "*"
        role = "\tadmin" if row.admin else ""
        typer.echo(
            f"{row.id}\t{row.user_id}\t{status}\ttools={tools}\tcreated "
            f"{row.created_at:%Y-%m-%d}{role}"
        )


def keys_revoke(
    ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="The key's id (keys list).")]
) -> None:
    """Revoke a key: it stops working at once, on every instance of the service."""
    _require_service()
    from ..service.auth import revoke_key

    if not asyncio.run(_with_db(ctx, lambda db: revoke_key(db, key_id))):
        err_console.print(f"error: no active key {key_id!r}")
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


def export_trace(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="The JSONL trace to write.")],
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's requests.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the latest N requests.")] = None,
) -> None:
    """Write the requests the service recorded (service.record_prompts) as a trace for
    `prefixcache explain` and `prefixcache simulate`."""
    _require_service()
    from ..service.export import recorded_trace
    from ..traces.records import save_trace

    isolation = state(ctx).settings.service.cache_isolation
    records = asyncio.run(
        _with_db(ctx, lambda db: recorded_trace(db, isolation, tenant, limit), migrate=False)
    )
    if not records:
        err_console.print(
            "error: no recorded prompts"
            + (f" for tenant {tenant!r}" if tenant else "")
            + "; turn on service.record_prompts (prompt text is kept "
            "service.record_prompts_days days)"
        )
        raise typer.Exit(1)
    err_console.print(f"wrote {len(records)} requests to {save_trace(out, records)}")
