"""One benchmark session against one server: check the server, run with a progress bar,
and always write what was collected, also when the run is interrupted (Ctrl-C, SIGTERM,
an engine that died): the report then says what is missing."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..engine.calibration import Calibration, calibrate
from ..errors import PrefixCacheError
from ..llm.inspector import EngineInspector
from ..llm.interface import LLMInterface
from ..prompts.library import PromptLibrary
from ..prompts.sizes import DEFAULT_TOOLS, TOOLS
from ..settings import ClientSettings
from ..traces.records import TraceWriter
from .apps import APPS, static_text
from .report import apps_grid, environment, grids, print_report, run_status, save
from .results import ArmRun, as_dict
from .runner import Benchmark, BenchmarkAborted, BenchSettings
from .scenarios import USERS
from .service import ServiceLauncher
from .sizing import chosen_apps, fit, measure_tokens
from .unmodified import REQUESTS, STABILIZE_TENANTS, TENANTS, AppsRun, run_apps

#: where the progress bar cannot be drawn (not a terminal), a line every this many requests
PLAIN_EVERY = 10


@dataclass
class PlainLines:
    """Progress as plain lines, for a log (CI, a pipe): a line when a scenario (or its
    next pass) begins, then one every ``PLAIN_EVERY`` requests and at the last one, each
    with the time so far and, when the total is known, an estimate of the time left."""

    console: Console
    total: int | None = None
    sent: int = 0
    began: float = field(default_factory=time.monotonic)
    stage: str | None = None

    def tick(self, message: str) -> None:
        self.sent += 1
        elapsed = time.monotonic() - self.began
        words = message.split()  # "<scenario> [pass N] <arm> ...", as the runner says it
        stage = " ".join(words[:3] if words[1:2] == ["pass"] else words[:1])
        if stage != self.stage:
            self.stage = stage
            self.console.print(f"== {stage} (at {elapsed:.0f} s)", highlight=False)
        if self.sent % PLAIN_EVERY == 0 or self.sent == self.total:
            of = f"/{self.total}" if self.total is not None else ""
            left = ""
            if self.total is not None and self.sent < self.total:
                left = f", about {elapsed / self.sent * (self.total - self.sent):.0f} s left"
            self.console.print(
                f"[{self.sent}{of}] {message} ({elapsed:.0f} s{left})", highlight=False
            )


@dataclass
class BenchSession:
    library: PromptLibrary
    out: Path
    command: str
    console: Console
    progress_console: Console
    scenarios: tuple[str, ...] = ("single",)
    arms: tuple[str, ...] = ()
    repeat: int = 1
    max_tokens: int = 32
    sweep: tuple[int, ...] = ()
    sessions: int = 8
    requests_per_session: int = 3
    passes: int = 1
    tool_time: float = 0.0
    #: at most this many steps per sequential scenario (None: the guide's)
    tasks: int | None = None
    #: the unmodified apps: how many, and requests per app
    apps: int = len(APPS)
    app_requests: int = REQUESTS
    #: size the plan from the engine's measured speed to end within this many minutes
    #: of ``began`` (the command's start: the engine's start counts)
    fit_minutes: float | None = None
    began: float = field(default_factory=time.monotonic)

    def settings(self) -> BenchSettings:
        extra = {"arms": self.arms} if self.arms else {}
        return BenchSettings(
            scenarios=self.scenarios,
            repeat=self.repeat,
            max_tokens=self.max_tokens,
            sweep=self.sweep,
            sessions=self.sessions,
            requests_per_session=self.requests_per_session,
            passes=self.passes,
            tool_time=self.tool_time,
            tasks=self.tasks,
            **extra,  # type: ignore[arg-type]
        )

    def run(
        self,
        cfg: ClientSettings,
        *,
        device: str,
        engine_facts: dict[str, Any] | None = None,
    ) -> bool:
        """Run, print and save the report; False if the run did not finish."""
        with EngineInspector(cfg.url, cfg.model_name(), cfg.api_key) as inspector:
            estimate = self._size(cfg, inspector, engine_facts)
            settings = self.settings()
            stats = inspector.cache_stats()
            if not stats.block_size:
                raise PrefixCacheError(
                    f"{cfg.url}/metrics has no vllm:cache_config_info; is it vLLM? (A router's "
                    "/metrics is not an engine's.)"
                )
            if stats.prefix_caching_enabled is False:
                raise PrefixCacheError(
                    f"Prefix caching is off on {cfg.url}; start vLLM with --enable-prefix-caching."
                )
            env = environment(
                engine_version=stats.version,
                model=cfg.model_name(),
                block_size=stats.block_size,
                device=device,
                base_url=cfg.url,
                settings=settings,
                command=self.command,
                kv_blocks=stats.num_blocks,
                engine_facts=engine_facts,
            )
            started = time.monotonic()
            runs, interrupted = self._run(cfg, inspector, stats.block_size, settings)
        apps: AppsRun | None = None
        if interrupted is None and "unmodified-apps" in self.scenarios:
            apps = self._run_apps(cfg)
        status = run_status(runs, settings, interrupted)
        if apps is not None:
            failed = sum(1 for r in apps.results if not r.success)
            status["text"] += f"; unmodified apps: {len(apps.results)} requests, {failed} failed"
            status["complete"] = bool(status["complete"]) and failed == 0
        if estimate is not None:
            took = time.monotonic() - started
            status["text"] += (
                f"; estimated {estimate / 60:.1f} min before the start, took {took / 60:.1f} min"
            )
            env["estimate"] = {"estimated_s": round(estimate, 1), "measured_s": round(took, 1)}
        env["status"] = status
        if runs or apps is not None:
            all_grids = grids(runs, self.library.tiers, settings) if runs else []
            if apps is not None:
                first = 1 if all_grids and all_grids[0].title.startswith("Through") else 0
                all_grids.insert(first, apps_grid(apps))
            print_report(self.console, all_grids)
            paths = save(self.out, env, runs, all_grids)
            if apps is not None:
                paths.append(self.out / "apps.json")
                paths[-1].write_text(json.dumps(apps.to_json(), indent=2) + "\n")
            self.console.print(f"report: {paths[1]}")
            for path in paths:
                self.console.print(f"  {path}")
        style = "green" if status["complete"] else "bold red"
        self.console.print(f"[{style}]{status['text']}[/{style}]")
        return bool(status["complete"])

    def _run(
        self,
        cfg: ClientSettings,
        inspector: EngineInspector,
        block_size: int,
        settings: BenchSettings,
    ) -> tuple[list[ArmRun], str | None]:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, TimeElapsedColumn(), console=self.progress_console) as progress:
            total = settings.planned_requests()
            task = progress.add_task("benchmark", total=total)
            plain = not self.progress_console.is_terminal  # CI, a pipe, `make demo > log`
            lines = PlainLines(self.progress_console, total)

            def tick(message: str) -> None:
                progress.update(task, advance=1, description=message)
                if plain:
                    lines.tick(message)

            holder: list[Benchmark] = []

            def note(message: str) -> None:
                progress.update(task, description=message)
                self.progress_console.print(f"[dim]{message}[/dim]")

            services = ServiceLauncher(
                self.library.settings,
                cfg.url,
                self.out / "service",
                USERS,
                TOOLS,
                DEFAULT_TOOLS,
                progress=note,
            )

            async def go() -> list[ArmRun]:
                with TraceWriter(self.out / "trace.jsonl") as trace:
                    async with LLMInterface(cfg) as llm:
                        runner = Benchmark(
                            llm,
                            inspector,
                            self.library,
                            block_size,
                            on_request=tick,
                            abort_after=settings.abort_after,
                            trace=trace,
                            services=services,
                        )
                        holder.append(runner)
                        return await runner.run(settings)

            try:
                return asyncio.run(go()), None
            except BenchmarkAborted as exc:
                reason = str(exc)
            except KeyboardInterrupt:
                reason = "interrupted (Ctrl-C)"
            except SystemExit as exc:  # SIGTERM (see cli.app)
                reason = f"terminated (exit {exc.code})"
                runs = holder[0].snapshot() if holder else []
                self._save_partial(runs, settings, reason)
                raise
        return (holder[0].snapshot() if holder else []), reason

    def _size(
        self,
        cfg: ClientSettings,
        inspector: EngineInspector,
        engine_facts: dict[str, Any] | None,
    ) -> float | None:
        """With ``fit_minutes``: choose tasks and apps from the engine's measured speed
        and say what will run and for about how long; the estimate in seconds."""
        if self.fit_minutes is None:
            return None
        speed = Calibration.from_dict((engine_facts or {}).get("calibration"))
        if speed is None:  # a server not started here: measure it now (3 requests)
            speed = calibrate(cfg.url, cfg.model_name(), api_key=cfg.api_key)
        tokens = measure_tokens(inspector, self.library, static_text(self.library))
        left = self.fit_minutes * 60 - (time.monotonic() - self.began)
        base = self.settings()
        plan, fits = fit(left, base, tokens=tokens, speed=speed)
        self.tasks, self.apps, self.app_requests = plan.tasks, plan.apps, plan.app_requests
        say = self.progress_console.print
        say(f"this machine: {speed.summary()}", highlight=False)
        say(
            f"will run {', '.join(self.scenarios)} with arms {', '.join(base.arms)}, "
            f"{self.passes} pass(es): {plan.describe()} on this machine",
            highlight=False,
        )
        if not fits:
            say(
                f"that is more than the {left / 60:.1f} min left of --fit-minutes "
                f"{self.fit_minutes:g}: this is the smallest plan",
                highlight=False,
            )
        return plan.seconds

    def _run_apps(self, cfg: ClientSettings) -> AppsRun:
        """Scenario 6: the unmodified apps, through a service with three gateway
        tenants (stabilizer off, shadow, on) and straight to the engine."""
        lines = PlainLines(self.progress_console)

        def note(message: str) -> None:
            self.progress_console.print(f"[dim]{message}[/dim]")

        launcher = ServiceLauncher(
            self.library.settings,
            cfg.url,
            self.out / "apps-service",
            (),
            TOOLS,
            DEFAULT_TOOLS,
            progress=note,
            tenants=tuple(TENANTS.values()),
            service={
                "stabilize": {"mode": "off", "tenants": STABILIZE_TENANTS},
                "warm": {"enabled": False},  # the apps use no agent prompt to warm
            },
        )

        async def go() -> AppsRun:
            async with launcher.start() as handle, httpx.AsyncClient(timeout=300) as http:
                return await run_apps(
                    http,
                    engine_url=cfg.url,
                    model=cfg.model_name(),
                    service=handle,
                    static=static_text(self.library),
                    apps=chosen_apps(self.apps),
                    requests=self.app_requests,
                    salt=f"apps-{uuid.uuid4().hex[:8]}",
                    on_request=lines.tick,
                )

        return asyncio.run(go())

    def _save_partial(self, runs: list[ArmRun], settings: BenchSettings, reason: str) -> None:
        """On SIGTERM there is no time for the report's tables: keep the rows."""
        if not runs:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        status = run_status(runs, settings, reason)
        data = {"status": status, "runs": [as_dict(r) for r in runs]}
        (self.out / "results.json").write_text(json.dumps(data, indent=2) + "\n")
        self.progress_console.print(f"partial results kept: {self.out / 'results.json'}")
