"""``doctor`` against a server that is not a vLLM engine: a stand-in on loopback that
answers ``/health`` but not ``/metrics``, as a router or an older vLLM does."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prefixcache.cli.app import app


class _HealthOnlyStandIn(BaseHTTPRequestHandler):
    """A stand-in for a router: /health answers 200, everything else 404."""

    def do_GET(self) -> None:
        status = 200 if self.path == "/health" else 404
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok" if status == 200 else b"no")

    do_POST = do_GET

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass


@pytest.fixture
def health_only_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HealthOnlyStandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_doctor_fails_cleanly_without_metrics(health_only_url: str, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    # the URL comes from the config file, not from --base-url: doctor must honour it
    config.write_text(f"llm: {{vllm: {{base_url: '{health_only_url}', max_retries: 0}}}}\n")
    result = CliRunner().invoke(app, ["--config", str(config), "doctor"])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    out = result.stdout
    assert f"PASS server reachable: {health_only_url}/health answered 200" in out
    assert f"FAIL prefix caching enabled: cannot read {health_only_url}/metrics" in out
    assert "a router's or proxy's /metrics is not the engine's" in out
    # reported as it is in this environment (the engine extra installed, or not)
    import importlib.util

    installed = importlib.util.find_spec("vllm") is not None
    assert ("PASS vLLM installed" if installed else "FAIL vLLM installed") in out
