"""The ``service`` arm: the guide's scenarios through a real ``prefixcache serve``, over HTTP.

The figure a user of the service sees, measured the way they would meet it:

- A **fresh service process per arm run**, started as users start it (``python -m
  prefixcache serve`` with a config file), on the benchmark's engine, with its own
  secret: new tenant salts, so nothing an earlier run cached can help it. Its keys (one
  per user the steps name) live in one SQLite database per benchmark run.
- The benchmark waits for the service's **start-up warm-up** (``/ready`` ``warm n/m``),
  and reports how long it took and how many prefixes it warmed, apart from the requests.
- Steps go to ``/chat``, **streamed**: TTFT is when the first token reaches the client.
  The workflow goes to ``/tasks``, each task chained to the one before
  (``previous_task_id``) with the plan declared on the first, as the guide's
  ``execute_task`` chain runs; a ``/tasks`` reply is not streamed, so its TTFT is the
  engine's TTFT (measured by the service) plus all of the service's own time: an upper
  bound, never less than what a streaming client would see.
- **Overhead** per request: the client's time minus the engine time the service measured
  for the same request (what the service itself costs: auth, database, composition).

Only HTTP and the CLI cross this boundary: the benchmark never imports the service.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..engine.local import free_port
from ..errors import PrefixCacheError, ProviderTimeoutError, ProviderUnavailableError
from ..llm.models import LLMResponse
from ..settings import Settings

#: the tenant every benchmark key belongs to
TENANT = "bench"
#: how long the service may take to start, and to warm up, before the run gives up
START_TIMEOUT_S = 60.0
WARM_TIMEOUT_S = 600.0
#: one request through the service
REQUEST_TIMEOUT_S = 300.0


class ServiceStartError(PrefixCacheError):
    """The benchmark's service process did not start or did not finish warming up."""


@dataclass(frozen=True)
class ServiceReply:
    """One request through the service: the engine's figures as the service reported
    them, and the client's own timing."""

    response: LLMResponse
    #: the client's time for the whole request
    client_time: float
    #: client time minus the engine time the service measured
    overhead: float
    #: the task id (``/tasks``), for chaining the next task
    task_id: str | None = None


@dataclass(frozen=True)
class ServiceHandle:
    url: str
    #: user -> key, in the benchmark's tenant
    keys: Mapping[str, str]
    #: seconds from the service answering ``/health`` to ``/ready`` saying ``warm``
    warmup_time: float
    #: the prefixes warmed at start (``warm n/m``: n)
    warmed: int
    #: ``/ready``'s warming text at the end of the warm-up
    warming: str
    #: tenant -> a key of it, for the other tenants the launcher was asked for
    tenant_keys: Mapping[str, str] = field(default_factory=dict)


class ServiceLauncher:
    """Starts ``prefixcache serve`` processes for the benchmark, and stops them by PID."""

    def __init__(
        self,
        settings: Settings,
        engine_url: str,
        folder: Path,
        users: Sequence[str],
        tools: Mapping[str, Sequence[str]],
        default_tools: Sequence[str],
        progress: Callable[[str], None] = lambda _msg: None,
        *,
        tenants: Sequence[str] = (),
        service: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.engine_url = engine_url
        self.folder = folder
        self.users = tuple(dict.fromkeys(users))
        self.tools = {agent: list(names) for agent, names in tools.items()}
        self.default_tools = list(default_tools)
        self.progress = progress
        self.database = folder / "service.db"
        self.keys: dict[str, str] = {}
        #: more tenants (one key each) and service settings (e.g. ``stabilize``)
        self.tenants = tuple(tenants)
        self.tenant_keys: dict[str, str] = {}
        self.service = dict(service or {})
        self.starts = 0
        #: every service process started (each stopped by its PID when its run ends)
        self.pids: list[int] = []

    # -- configuration and keys (the CLI users run) ---------------------------------------
    def config(self, port: int) -> Path:
        """A config file for one start: the benchmark's settings, this engine, a fresh
        secret (new tenant salts), the benchmark's tools per agent."""
        data: dict[str, Any] = self.settings.model_dump(mode="json", exclude_none=True)
        data["llm"]["vllm"]["base_url"] = self.engine_url
        data["service"].update(
            host="127.0.0.1",
            port=port,
            database_url=f"sqlite+aiosqlite:///{self.database}",
            secret=secrets.token_hex(32),
            agent_tools=self.tools,
            default_tools=self.default_tools,
            **self.service,
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"service-{port}.yaml"
        path.write_text(json.dumps(data, indent=1) + "\n")  # JSON is YAML
        path.chmod(0o600)  # it holds the secret
        return path

    def _cli(self, config: Path, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "prefixcache", "--config", str(config), *args],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise ServiceStartError(
                f"`prefixcache {' '.join(args)}` failed (exit {done.returncode}): "
                f"{done.stderr.strip()[-1500:]}"
            )
        return done.stdout.strip()

    def make_keys(self) -> None:
        """One key per user the steps name, and one per extra tenant, in the run's
        database (once per run)."""
        if self.keys or self.tenant_keys:
            return
        config = self.config(free_port())
        for user in self.users:
            self.keys[user] = self._cli(
                config, "keys", "create", "--tenant", TENANT, "--user", user
            ).splitlines()[-1]
            self.progress(f"service: key for {user}")
        for tenant in self.tenants:
            self.tenant_keys[tenant] = self._cli(
                config, "keys", "create", "--tenant", tenant, "--user", "bench"
            ).splitlines()[-1]
            self.progress(f"service: key for tenant {tenant}")

    # -- one service process ----------------------------------------------------------------
    @asynccontextmanager
    async def start(self) -> AsyncIterator[ServiceHandle]:
        """A fresh service on this engine, warmed up; stopped (by PID) on exit."""
        await asyncio.to_thread(self.make_keys)
        self.starts += 1
        port = free_port()
        config = self.config(port)
        url = f"http://127.0.0.1:{port}"
        log_path = self.folder / f"service-{self.starts}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "prefixcache", "--config", str(config), "serve"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.pids.append(proc.pid)
        try:
            async with httpx.AsyncClient(timeout=5) as http:
                await _wait(http, f"{url}/health", proc, log_path, START_TIMEOUT_S, "start")
                self.progress("service: started, warming up")
                began = time.perf_counter()
                warming = await _wait_warm(http, url, proc, log_path)
                took = time.perf_counter() - began
            self.progress(f"service: {warming} in {took:.1f} s")
            yield ServiceHandle(
                url, dict(self.keys), took, _warmed_count(warming), warming, dict(self.tenant_keys)
            )
        finally:
            _stop(proc)


async def _wait(
    http: httpx.AsyncClient,
    url: str,
    proc: subprocess.Popen[bytes],
    log: Path,
    timeout: float,
    what: str,
) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceStartError(
                f"the benchmark's service exited (code {proc.returncode}) during {what}; "
                f"its log ({log}) ends: {_tail(log)}"
            )
        try:
            answer = await http.get(url)
            if answer.status_code == 200:
                return answer
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)
    raise ServiceStartError(
        f"the benchmark's service did not {what} within {timeout:.0f} s; its log ({log}) "
        f"ends: {_tail(log)}"
    )


async def _wait_warm(
    http: httpx.AsyncClient, url: str, proc: subprocess.Popen[bytes], log: Path
) -> str:
    """Poll ``/ready`` until the warm-up has finished (or is off); its last text."""
    deadline = time.monotonic() + WARM_TIMEOUT_S
    while time.monotonic() < deadline:
        answer = await _wait(http, f"{url}/ready", proc, log, START_TIMEOUT_S, "get ready")
        warming = str(answer.json().get("warming") or "off")
        if warming.startswith("warm ") or warming == "off":
            return warming
        await asyncio.sleep(0.25)
    raise ServiceStartError(
        f"the benchmark's service did not finish its warm-up within {WARM_TIMEOUT_S:.0f} s"
    )


def _warmed_count(warming: str) -> int:
    """``warm 22/22 (3 left cold)`` -> 22; ``off`` -> 0."""
    try:
        return int(warming.split()[1].split("/")[0])
    except (IndexError, ValueError):
        return 0


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-1500:]
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM by PID (a clean shutdown flushes the service's records), then SIGKILL."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class ServiceClient:
    """What a caller of the service does: ``/chat`` streamed, ``/tasks`` chained."""

    def __init__(self, handle: ServiceHandle, http: httpx.AsyncClient) -> None:
        self.handle = handle
        self.http = http

    def _headers(self, user: str) -> dict[str, str]:
        key = self.handle.keys.get(user)
        if key is None:
            raise PrefixCacheError(f"the benchmark made no service key for user {user!r}")
        return {"Authorization": f"Bearer {key}"}

    async def chat(
        self,
        user: str,
        *,
        message: str,
        agent_type: str,
        session_id: str,
        max_tokens: int,
        additional_params: Mapping[str, Any] | None = None,
        next_agent_types: Sequence[str] = (),
    ) -> ServiceReply:
        body: dict[str, Any] = {
            "message": message,
            "agent_type": agent_type,
            "session_id": session_id,
            "max_tokens": max_tokens,
            "stream": True,
        }
        if additional_params:
            body["additional_params"] = dict(additional_params)
        if next_agent_types:
            body["next_agent_types"] = list(next_agent_types)
        started = time.perf_counter()
        first: float | None = None
        parts: list[str] = []
        done: dict[str, Any] | None = None
        try:
            async with self.http.stream(
                "POST", f"{self.handle.url}/chat", json=body, headers=self._headers(user)
            ) as answer:
                if answer.status_code != 200:
                    await answer.aread()
                    raise _http_error("/chat", answer)
                async for event, data in sse_events(answer.aiter_lines()):
                    if event == "token":
                        if first is None:
                            first = time.perf_counter() - started
                        parts.append(str(data.get("delta", "")))
                    elif event == "done":
                        done = data
                    elif event == "error":
                        raise PrefixCacheError(
                            f"/chat stream error {data.get('status')}: {data.get('message')}"
                        )
        except httpx.TimeoutException as exc:
            raise ProviderTimeoutError(f"/chat timed out: {exc}") from exc
        except httpx.HTTPError as exc:
            raise ProviderUnavailableError(f"/chat failed: {exc}") from exc
        if done is None:
            raise PrefixCacheError("/chat stream ended without its done event")
        elapsed = time.perf_counter() - started
        return _reply(
            "".join(parts), done.get("cache") or {}, elapsed, first, done.get("finish_reason")
        )

    async def task(
        self,
        user: str,
        *,
        description: str,
        agent_type: str,
        max_tokens: int,
        required_tools: Sequence[str] | None = None,
        priority: str | None = None,
        previous_task_id: str | None = None,
        session_id: str | None = None,
        plan: Sequence[str] | None = None,
    ) -> ServiceReply:
        body: dict[str, Any] = {
            "agent_type": agent_type,
            "description": description,
            "max_tokens": max_tokens,
        }
        optional = {
            "required_tools": list(required_tools) if required_tools is not None else None,
            "priority": priority,
            "previous_task_id": previous_task_id,
            "session_id": session_id,
            "plan": list(plan) if plan is not None else None,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        started = time.perf_counter()
        try:
            answer = await self.http.post(
                f"{self.handle.url}/tasks", json=body, headers=self._headers(user)
            )
        except httpx.TimeoutException as exc:
            raise ProviderTimeoutError(f"/tasks timed out: {exc}") from exc
        except httpx.HTTPError as exc:
            raise ProviderUnavailableError(f"/tasks failed: {exc}") from exc
        elapsed = time.perf_counter() - started
        if answer.status_code != 200:
            raise _http_error("/tasks", answer)
        data = answer.json()
        if data.get("status") != "completed":
            raise PrefixCacheError(
                f"/tasks: task {data.get('id')} {data.get('status')}: {data.get('error')}"
            )
        reply = _reply(data.get("result") or "", data.get("cache") or {}, elapsed, None, None)
        return ServiceReply(reply.response, reply.client_time, reply.overhead, data.get("id"))


def _reply(
    content: str,
    cache: Mapping[str, Any],
    elapsed: float,
    client_ttft: float | None,
    finish_reason: str | None,
) -> ServiceReply:
    """The row's figures: prompt and cached tokens as the engine reported them, the
    client's time; TTFT the client's (streamed) or the engine's plus the service's whole
    own time (not streamed: an upper bound)."""
    engine_time = float(cache.get("processing_time") or 0.0)
    overhead = max(elapsed - engine_time, 0.0) if engine_time else 0.0
    engine_ttft = cache.get("ttft")
    ttft = client_ttft
    if ttft is None and engine_ttft is not None:
        ttft = float(engine_ttft) + overhead
    prompt = int(cache.get("prompt_tokens") or 0)
    cached = cache.get("cached_tokens")
    response = LLMResponse(
        content=content,
        usage={
            "prompt_tokens": prompt,
            "completion_tokens": int(cache.get("completion_tokens") or 0),
            "total_tokens": prompt + int(cache.get("completion_tokens") or 0),
            "cached_tokens": None if cached is None else int(cached),
        },
        metadata={
            "cached_tokens": None if cached is None else int(cached),
            "cache_hit_rate": cache.get("hit_rate"),
            "ttft": ttft,
            "provider": "prefixcache-service",
            "model": "",
            "served_model": "",
            "requested_model": "",
            "request_id": None,
        },
        processing_time=elapsed,
        finish_reason=finish_reason,
    )
    return ServiceReply(response, elapsed, overhead)


def _http_error(route: str, answer: httpx.Response) -> PrefixCacheError:
    try:
        detail = answer.json().get("error", {}).get("message")
    except (ValueError, AttributeError):
        detail = None
    text = detail or answer.text[:300]
    if answer.status_code in (502, 503, 504):
        return ProviderUnavailableError(f"{route} answered {answer.status_code}: {text}")
    return PrefixCacheError(f"{route} answered {answer.status_code}: {text}")


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """``(event, data)`` pairs of a server-sent event stream: the service's /chat, or an
    OpenAI-style chat stream (its ``data: [DONE]`` terminator and comments skipped)."""
    event = "message"
    data: list[str] = []
    async for line in lines:
        if line == "":
            payload = "\n".join(data).strip()
            if payload and payload != "[DONE]":
                yield event, json.loads(payload)
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
    payload = "\n".join(data).strip()
    if payload and payload != "[DONE]":
        yield event, json.loads(payload)
