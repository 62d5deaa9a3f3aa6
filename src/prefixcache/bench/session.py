"""One benchmark session against one server: check the server, run with a progress bar,
and always write what was collected, also when the run is interrupted (Ctrl-C, SIGTERM,
an engine that died): the report then says what is missing."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import PrefixCacheError
from ..llm.inspector import EngineInspector
from ..llm.interface import LLMInterface
from ..llm.trace import TraceWriter
from ..prompts.library import PromptLibrary
from ..settings import ClientSettings
from .report import environment, grids, print_report, run_status, save
from .results import ArmRun, as_dict
from .runner import Benchmark, BenchmarkAborted, BenchSettings


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

    def settings(self) -> BenchSettings:
        extra = {"arms": self.arms} if self.arms else {}
        return BenchSettings(
            scenarios=self.scenarios, repeat=self.repeat, max_tokens=self.max_tokens,
            sweep=self.sweep, sessions=self.sessions,
            requests_per_session=self.requests_per_session, passes=self.passes,
            tool_time=self.tool_time, **extra,  # type: ignore[arg-type]
        )  # fmt: skip

    def run(self, cfg: ClientSettings, *, device: str) -> bool:
        """Run, print and save the report; False if the run did not finish."""
        settings = self.settings()
        with EngineInspector(cfg.url, cfg.model_name(), cfg.api_key) as inspector:
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
                engine_version=stats.version, model=cfg.model_name(), block_size=stats.block_size,
                device=device, base_url=cfg.url, settings=settings, command=self.command,
                kv_blocks=stats.num_blocks,
            )  # fmt: skip
            runs, interrupted = self._run(cfg, inspector, stats.block_size, settings)
        status = run_status(runs, settings, interrupted)
        env["status"] = status
        if runs:
            all_grids = grids(runs, self.library.tiers, settings)
            print_report(self.console, all_grids)
            paths = save(self.out, env, runs, all_grids)
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
            task = progress.add_task("benchmark", total=settings.planned_requests())

            def tick(message: str) -> None:
                progress.update(task, advance=1, description=message)

            holder: list[Benchmark] = []

            async def go() -> list[ArmRun]:
                with TraceWriter(self.out / "trace.jsonl") as trace:
                    async with LLMInterface(cfg) as llm:
                        runner = Benchmark(
                            llm, inspector, self.library, block_size, on_request=tick,
                            abort_after=settings.abort_after, trace=trace,
                        )  # fmt: skip
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

    def _save_partial(self, runs: list[ArmRun], settings: BenchSettings, reason: str) -> None:
        """On SIGTERM there is no time for the report's tables: keep the rows."""
        if not runs:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        status = run_status(runs, settings, reason)
        data = {"status": status, "runs": [as_dict(r) for r in runs]}
        (self.out / "results.json").write_text(json.dumps(data, indent=2) + "\n")
        self.progress_console.print(f"partial results kept: {self.out / 'results.json'}")
