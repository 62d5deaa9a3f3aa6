"""A fleet: N local vLLM replicas behind the vLLM project's router (``vllm-router``).

Each replica is a ``LocalEngine`` with its own port, state and temp folders, KV space and
(when the machine has the cores) its own CPU core. The router starts only once every
replica answers ``/health`` (started earlier, it lists unready workers as healthy), with
flags that fail over in seconds. ``stop`` stops the router first, then every replica, by
PID. Per-replica cache figures come from each replica's own ``/metrics``: the router's
``/metrics`` forwards one worker's, not the fleet's.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

from ..errors import EngineError
from ..llm.inspector import EngineCacheStats, EngineInspector, answers_ok
from ..settings import FleetSettings, VLLMConfig
from .local import LocalEngine, port_in_use, terminate

ROUTER_BINARY = "vllm-router"


def router_binary() -> str | None:
    """The vllm-router console script (next to this Python, or on PATH)."""
    beside = Path(sys.executable).parent / ROUTER_BINARY
    if beside.is_file():
        return str(beside)
    return shutil.which(ROUTER_BINARY)


#: what a running router's /proc/<pid>/cmdline holds: vllm-router 0.1.17 renames its
#: process to "vllm::router" (setproctitle), or the launch command's name
_ROUTER_TITLES = (b"vllm::router", ROUTER_BINARY.encode(), b"vllm_router")


def _is_router(pid: int) -> bool:
    """True if ``pid`` is alive and is vllm-router (guards against PID reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return any(title in cmdline for title in _ROUTER_TITLES)


@dataclass(frozen=True)
class ReplicaStatus:
    index: int
    url: str
    pid: int | None
    healthy: bool
    stats: EngineCacheStats | None


@dataclass(frozen=True)
class FleetStatus:
    router_url: str
    router_pid: int | None
    #: the router's /health: 200 only while every worker is up
    router_healthy: bool
    policy: str | None
    replicas: tuple[ReplicaStatus, ...]
    #: the router's /readiness: 200 while it can route to some worker
    router_serving: bool = False

    @property
    def up(self) -> int:
        return sum(r.healthy for r in self.replicas)

    @property
    def state(self) -> str:
        """``healthy`` (the router and every replica), ``degraded`` (the router serves,
        some replica is down) or ``down`` (the router does not serve)."""
        if self.router_healthy and self.up == len(self.replicas):
            return "healthy"
        if (self.router_serving or self.router_healthy) and self.up > 0:
            return "degraded"
        return "down"


class Fleet:
    """Start, stop and inspect N replicas and their router."""

    def __init__(
        self,
        config: VLLMConfig,
        fleet: FleetSettings,
        *,
        policy: str | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.settings = fleet
        self.policy = policy or fleet.policy
        self._progress = progress
        self.state_dir = config.state_dir / "fleet"
        self.router_file = self.state_dir / "router.json"
        self.router_log = self.state_dir / "router.log"
        self._router: subprocess.Popen[bytes] | None = None
        cores = os.cpu_count() or 1
        self.replicas: list[LocalEngine] = []
        for i in range(fleet.replicas):
            changes: dict[str, object] = {
                "port": fleet.replica_base_port + i,
                "base_url": None,
                "state_dir": self.state_dir / f"replica-{i}",
            }
            if fleet.kv_space_gib is not None:
                changes["cpu_kvcache_space_gib"] = fleet.kv_space_gib
            env: dict[str, str] = {}
            if fleet.bind_cores and fleet.replicas <= cores:
                env["VLLM_CPU_OMP_THREADS_BIND"] = str(i)
            if fleet.dev_mode:
                env["VLLM_SERVER_DEV_MODE"] = "1"
            self.replicas.append(
                LocalEngine(
                    config.with_overrides(**changes), progress=self._replica_say(i), extra_env=env
                )
            )

    # -- addresses -------------------------------------------------------------------
    @property
    def router_url(self) -> str:
        return f"http://{self.settings.router_host}:{self.settings.router_port}"

    @property
    def replica_urls(self) -> list[str]:
        return [r.base_url for r in self.replicas]

    def _say(self, message: str) -> None:
        if self._progress is not None:
            self._progress(message)

    def _replica_say(self, i: int) -> Callable[[str], None]:
        return lambda message: self._say(f"replica {i}: {message}")

    # -- the router ------------------------------------------------------------------
    def router_command(self, policy: str | None = None) -> list[str]:
        binary = router_binary()
        if binary is None:
            raise EngineError(
                "vllm-router is not installed. It comes with the engine extra: "
                "`pip install 'prefixcache[engine]'` (or `pip install vllm-router==0.1.17`)."
            )
        s = self.settings
        return [
            binary,
            "--host",
            s.router_host,
            "--port",
            str(s.router_port),
            "--prometheus-port",
            str(s.prometheus_port),
            "--worker-urls",
            *self.replica_urls,
            "--policy",
            policy or self.policy,
            *s.router_args,
        ]

    def recorded_router(self) -> dict[str, object]:
        try:
            data = json.loads(self.router_file.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def router_pid(self) -> int | None:
        pid = self.recorded_router().get("pid")
        return pid if isinstance(pid, int) and _is_router(pid) else None

    def start_router(self, policy: str | None = None, timeout: float = 60) -> None:
        """Start the router in front of the (healthy) replicas."""
        if self.router_pid() is not None:
            raise EngineError(f"A router is already running (pid {self.router_pid()}).")
        for port in (self.settings.router_port, self.settings.prometheus_port):
            if port_in_use(self.settings.router_host, port):
                raise EngineError(
                    f"Port {port} is in use; set fleet.router_port / fleet.prometheus_port "
                    "to free ports (every router needs its own Prometheus port)."
                )
        unhealthy = [r.base_url for r in self.replicas if not r.healthy()]
        if unhealthy:
            raise EngineError(
                f"Replicas not healthy: {', '.join(unhealthy)}. The router starts only when "
                "every replica answers /health (it would list unready ones as healthy)."
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        command = self.router_command(policy)
        log = self.router_log.open("ab")
        try:
            self._router = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        self.policy = policy or self.policy
        record = {"pid": self._router.pid, "url": self.router_url, "policy": self.policy}
        self.router_file.write_text(json.dumps(record) + "\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._router.poll() is not None:
                tail = "\n".join(self.router_log.read_text(errors="replace").splitlines()[-15:])
                self.stop_router()
                raise EngineError(
                    f"vllm-router exited at start (log {self.router_log}).", log_tail=tail
                )
            if self.router_healthy():
                self._say(f"router ({self.policy}) at {self.router_url}")
                return
            time.sleep(0.2)
        self.stop_router()
        raise EngineError(f"vllm-router did not answer /health within {timeout:.0f} s.")

    def router_healthy(self) -> bool:
        return answers_ok(self.router_url, "/health")

    def router_serving(self) -> bool:
        """The router can route requests (its /readiness), even with a worker down."""
        return answers_ok(self.router_url, "/readiness")

    def stop_router(self) -> bool:
        pid = self._router.pid if self._router is not None else self.router_pid()
        stopped = pid is not None and terminate(pid, self._router, 10)
        if self._router is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._router.wait(timeout=5)
            self._router = None
        self.router_file.unlink(missing_ok=True)
        return stopped

    # -- the fleet -------------------------------------------------------------------
    def start(self) -> None:
        """Every replica (started together), then the router once all are healthy."""
        try:
            for replica in self.replicas:
                replica.start_process()
            deadline = time.monotonic() + self.settings.startup_timeout_s
            for replica in self.replicas:
                replica.wait_healthy(deadline)
            self.start_router()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> bool:
        """The router first (no request reaches a stopping replica), then the replicas."""
        stopped = self.stop_router()
        for replica in self.replicas:
            stopped = replica.stop() or stopped
        return stopped

    def restart_replica(self, index: int) -> None:
        """Start replica ``index`` again in place (after a crash, an OOM kill, ``kill``),
        the router and the other replicas untouched. The router takes it back once it
        answers ``/health`` (its checks run every few seconds); a ``prefixcache serve``
        in front notices the router healthy again and warms its prefixes on it."""
        if not 0 <= index < len(self.replicas):
            raise EngineError(
                f"There is no replica {index}: the fleet has {len(self.replicas)} "
                f"(0-{len(self.replicas) - 1})."
            )
        replica = self.replicas[index]
        if replica.recorded_pid() is not None and replica.healthy():
            raise EngineError(
                f"Replica {index} (pid {replica.recorded_pid()}, {replica.base_url}) is "
                "running and healthy; nothing to restart."
            )
        replica.stop()  # a hung process, or the files of a dead one
        self._say(f"restarting replica {index} at {replica.base_url}")
        replica.start()

    def reset_caches(self) -> None:
        """Empty every replica's prefix cache (needs fleet.dev_mode)."""
        for replica in self.replicas:
            answer = httpx.post(f"{replica.base_url}/reset_prefix_cache", timeout=30)
            if answer.status_code >= 400:
                raise EngineError(
                    f"{replica.base_url}/reset_prefix_cache answered {answer.status_code}; "
                    "start the fleet with fleet.dev_mode: true (VLLM_SERVER_DEV_MODE=1)."
                )

    def replica_stats(self) -> list[EngineCacheStats | None]:
        out: list[EngineCacheStats | None] = []
        for replica in self.replicas:
            try:
                with EngineInspector(replica.base_url, replica.model, timeout=5) as inspector:
                    out.append(inspector.cache_stats())
            except Exception:  # a replica that does not answer has no figures
                out.append(None)
        return out

    def status(self) -> FleetStatus:
        stats = self.replica_stats()
        replicas = tuple(
            ReplicaStatus(i, r.base_url, r.recorded_pid(), r.healthy(), stats[i])
            for i, r in enumerate(self.replicas)
        )
        recorded = self.recorded_router()
        policy = recorded.get("policy")
        return FleetStatus(
            self.router_url,
            self.router_pid(),
            self.router_healthy(),
            policy if isinstance(policy, str) else None,
            replicas,
            self.router_serving(),
        )

    def __enter__(self) -> Fleet:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class FleetFigures:
    """A fleet's figures over an interval, from the replicas' own /metrics deltas."""

    #: per replica: queries, hits, requests, prompt_tokens (None: no figures)
    replicas: tuple[dict[str, float] | None, ...]
    hit_rate: float | None
    balance_requests: float | None
    balance_prompt_tokens: float | None


def fleet_figures(
    before: Sequence[EngineCacheStats | None], after: Sequence[EngineCacheStats | None]
) -> FleetFigures:
    """The fleet's hit rate and balance (max / mean per replica) between two snapshots."""
    rows: list[dict[str, float] | None] = []
    for b, a in zip(before, after, strict=True):
        if a is None or b is None:
            rows.append(None)
            continue
        rows.append(
            {
                "queries": a.queries - b.queries,
                "hits": a.hits - b.hits,
                "requests": a.requests - b.requests,
                "prompt_tokens": a.prompt_tokens - b.prompt_tokens,
            }
        )
    live = [r for r in rows if r is not None]
    queries = sum(r["queries"] for r in live)
    hits = sum(r["hits"] for r in live)

    def balance(key: str) -> float | None:
        values = [r[key] for r in live]
        mean = sum(values) / len(values) if values else 0
        return max(values) / mean if mean else None

    return FleetFigures(
        tuple(rows),
        hits / queries if queries else None,
        balance("requests"),
        balance("prompt_tokens"),
    )
