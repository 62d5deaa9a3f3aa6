"""``prefixcache serve`` as a real process on 127.0.0.1, started and stopped by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from prefixcache.engine.local import free_port

#: the live suite's prompt set: the built-in tiers and roles over a base prompt of about
#: 300 tokens (the guide's is about 4,000), so that every test prefills a seventh of the
#: tokens and still spans several KV blocks; `tests/prompts_compact/`
COMPACT_PROMPTS = Path(__file__).resolve().parents[1] / "prompts_compact"


class ServiceProcess:
    """One service process: its config file, database, log and port."""

    def __init__(
        self,
        folder: Path,
        vllm_url: str,
        prompt_dirs: tuple[Path, ...] = (COMPACT_PROMPTS,),
        **service: object,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = folder / "service.db"
        self.log = folder / "service.log"
        self.config = folder / "config.yaml"
        lines = [
            "llm:",
            "  vllm:",
            f"    base_url: {vllm_url}",
            "    request_timeout_s: 120",
            "    max_retries: 1",
            "    retry_backoff_s: 0.2",
            "prompts:",
            f"  directories: [{', '.join(str(d) for d in prompt_dirs)}]",
            "service:",
            "  host: 127.0.0.1",
            f"  port: {self.port}",
        ]
        # warm-up at start is on in the product; tests of other things turn it off so
        # that each new tenant does not prefill 22 prefixes (the warm tests turn it on)
        service.setdefault("warm", "{enabled: false}")
        if "database_url" not in service:
            lines.append(f"  database_url: sqlite+aiosqlite:///{self.db}")
        lines += [f"  {k}: {v}" for k, v in service.items()]
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "prefixcache", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    def key(self, tenant: str, user: str, *extra: str) -> str:
        result = self.cli("keys", "create", "--tenant", tenant, "--user", user, *extra)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def start(self, timeout: float = 60) -> None:
        log = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "prefixcache", "--config", str(self.config), "serve"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the service did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush: what a crash or an OOM kill does."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None
