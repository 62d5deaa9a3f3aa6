"""The command line against real vLLM servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prefixcache.engine.local import LocalEngine, _alive, free_port

from .token_ledger import LEDGER

pytestmark = pytest.mark.integration


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefixcache", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, COLUMNS="200"),
    )


def test_analyze_predicted_equals_measured(
    engine: LocalEngine, compact_config_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "analyze.json"
    result = cli(
        "--config",
        str(compact_config_file),
        "analyze",
        "--agent",
        "frontend-engineer,orchestrator",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    rows = [
        line
        for line in result.stdout.splitlines()
        if "frontend-engineer" in line or "orchestrator" in line
    ]
    assert len(rows) == 2, result.stdout
    assert all(row.rstrip(" │|").split()[-1] == "yes" for row in rows), result.stdout
    assert "block 128" in result.stdout
    report = json.loads(out.read_text())  # the same figures, as numbers
    assert report["block_size"] == 128
    assert [a["agent_type"] for a in report["agents"]] == ["frontend-engineer", "orchestrator"]
    for agent in report["agents"]:
        assert agent["predicted_cold"] == agent["measured_cold"] == 0, agent
        assert agent["predicted_warm"] == agent["measured_warm"] > 0, agent
        assert agent["matches"] is True


def test_doctor_passes_on_the_embedded_engine(
    engine: LocalEngine, compact_config_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "doctor.json"
    result = cli("--config", str(compact_config_file), "doctor", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    checks = {c["name"]: c for c in json.loads(out.read_text())}
    for name in (
        "server reachable",
        "engine dtype and speed",
        "prefix caching enabled",
        "cached-token reporting",
        "chat template stable",
        "live two-request test",
    ):
        assert checks[name]["status"] == "PASS", checks[name]
        assert f"PASS {name}" in result.stdout
    # the CPU, the dtype chosen for it and why, and the speed measured at start
    facts = checks["engine dtype and speed"]["detail"]
    dtype = "bfloat16" if engine.cpu.native_bf16 else "float32"
    assert f"running with --dtype {dtype}" in facts and engine.cpu.cpu_class in facts
    assert "tokens/s" in facts and "a cached request" in facts


def test_doctor_fails_with_fixes_when_no_server() -> None:
    result = cli("doctor", "--base-url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "FAIL server reachable" in result.stdout and "prefixcache engine start" in result.stdout


def test_doctor_json_names_each_check_and_its_fix() -> None:
    result = cli("doctor", "--base-url", f"http://127.0.0.1:{free_port()}", "--format", "json")
    assert result.returncode == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["server reachable"]["status"] == "FAIL"
    assert "prefixcache engine start" in checks["server reachable"]["fix"]
    assert checks["live two-request test"]["status"] == "SKIP"


@pytest.mark.runs_last
def test_engine_status_logs_start_again_and_stop(
    engine: LocalEngine, engine_config_file: Path
) -> None:
    """`prefixcache engine ...` as a user runs it, on the session's engine (which the
    faults test brought back with `engine start`): it stops it, so it runs last."""
    config = str(engine_config_file)
    pid = engine.recorded_pid()
    assert pid is not None and _alive(pid)
    run_dir = engine.recorded_run_dir()
    assert run_dir is not None and run_dir.is_dir()  # the server's temporary files go here
    status = cli("engine", "status", "--config", config)
    assert status.returncode == 0 and "healthy: True" in status.stdout
    assert f"127.0.0.1:{engine.config.port}" in status.stdout
    again = cli("engine", "start", "--config", config)
    assert again.returncode == 0 and "already running" in again.stderr
    logs = cli("engine", "logs", "--config", config, "-n", "5")
    assert logs.returncode == 0 and logs.stdout.strip()
    LEDGER.account()  # before the stop: what it prefilled is charged
    stopped = cli("engine", "stop", "--config", config)
    assert stopped.returncode == 0 and f"stopped pid {pid}" in stopped.stdout
    assert not _alive(pid)
    assert not run_dir.exists() and not engine.pid_file.exists()
    assert cli("engine", "status", "--config", config).returncode == 1
