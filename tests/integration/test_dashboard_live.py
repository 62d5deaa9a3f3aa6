"""``/dashboard`` in a real browser: Debian's headless Chromium signs in with an API key
against a running service with real traffic on the real engine, and every figure the
page shows equals ``GET /stats``; the latest cache break is explained on the page."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefixcache import LocalEngine

from .browser import chromium
from .service_process import ServiceProcess

pytestmark = pytest.mark.integration

STATIC = (
    "You are the release assistant. Check every release note for missing migrations, "
    "breaking API changes and unreviewed dependencies; answer with a checklist. "
) * 10


@pytest.fixture(scope="module")
def recording_service(
    engine: LocalEngine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """A service that records prompt text (for the breaks), in front of the engine."""
    proc = ServiceProcess(
        tmp_path_factory.mktemp("dashboard"),
        engine.base_url,
        default_max_tokens=4,
        rate_limit_per_minute=0,
        record_prompts="true",
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def _traffic(service: ServiceProcess, key: str) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=service.url, headers=headers, timeout=120) as http:
        for agent, message in [
            ("frontend-engineer", "Add a dark mode toggle."),
            ("frontend-engineer", "Make the header sticky."),
            ("code-reviewer", "Review the retry change."),
            ("code-reviewer", "Review the cache change."),
            ("orchestrator", "Plan the release."),
        ]:
            answer = http.post("/chat", json={"message": message, "agent_type": agent})
            assert answer.status_code == 200, answer.text
        # a client that puts a timestamp before its static prompt: a cache break
        for stamp in ("2026-11-27T10:00:01Z", "2026-11-27T10:04:39Z"):
            answer = http.post(
                "/v1/chat/completions",
                headers={"x-agent-type": "release-bot"},
                json={
                    "model": service_model(http),
                    "max_tokens": 2,
                    "messages": [
                        {"role": "system", "content": f"Now: {stamp}\n{STATIC}"},
                        {"role": "user", "content": "Check release 4.2."},
                    ],
                },
            )
            assert answer.status_code == 200, answer.text


def service_model(http: httpx.Client) -> str:
    models = http.get("/v1/models").json()["data"]
    return str(models[0]["id"])


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def _stats(service: ServiceProcess, key: str) -> dict[str, Any]:
    answer = httpx.get(f"{service.url}/stats", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


def test_the_dashboard_shows_what_stats_says(recording_service: ServiceProcess) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    service = recording_service
    key = service.key("dash", "dora", "--admin")  # sees the replicas and every user's text
    _traffic(service, key)
    deadline = time.monotonic() + 10  # records are written in batches after responses
    while _stats(service, key)["requests"] < 7 and time.monotonic() < deadline:
        time.sleep(0.2)
    stats = _stats(service, key)
    assert stats["requests"] == 7

    # without a key: the sign-in form, and no figures
    plain = httpx.get(f"{service.url}/dashboard")
    assert (
        plain.status_code == 401
        and 'name="key"' in plain.text
        and "total-hit-rate" not in plain.text
    )
    assert "script-src" not in plain.headers["content-security-policy"]  # none allowed at all

    with chromium() as driver:
        driver.get(f"{service.url}/dashboard?refresh=0")
        field = driver.find_element(By.ID, "key")
        field.send_keys("pc_0000000000000000_not-a-real-key-at-all")
        driver.find_element(By.ID, "sign-in").click()
        wait = WebDriverWait(driver, 30)
        error = wait.until(ec.presence_of_element_located((By.ID, "login-error")))
        assert "not valid" in error.text
        driver.find_element(By.ID, "key").send_keys(key)
        driver.find_element(By.ID, "sign-in").click()
        find = driver.find_element
        assert wait.until(ec.presence_of_element_located((By.ID, "tenant"))).text == "dash"
        assert driver.find_elements(By.TAG_NAME, "script") == []

        assert find(By.ID, "total-requests").text == str(stats["requests"])
        assert find(By.ID, "total-hit-rate").text == _pct(stats["hit_rate"])
        for kind, groups in (("agent", stats["by_agent"]), ("tier", stats["by_tier"])):
            rows = driver.find_elements(By.CSS_SELECTOR, f"tr.{kind}")
            assert [r.get_attribute("data-key") for r in rows] == [g["key"] for g in groups]
            for row, group in zip(rows, groups, strict=True):
                cell = row.find_element
                assert cell(By.CLASS_NAME, "requests").text == str(group["requests"])
                assert cell(By.CLASS_NAME, "hit-rate").text == _pct(group["hit_rate"])
                assert cell(By.CLASS_NAME, "ttft-p50").text == _s(group["ttft_p50"])
                assert cell(By.CLASS_NAME, "ttft-p95").text == _s(group["ttft_p95"])
                assert cell(By.CLASS_NAME, "expected").text == (group["expected_hit_rate"] or "-")
                assert cell(By.CLASS_NAME, "verdict").text == group["versus_expected"]
        assert {g["key"] for g in stats["by_agent"]} >= {"frontend-engineer", "release-bot"}

        # the TTFT chart has this minute's points; one replica (no router) with figures
        assert driver.find_elements(By.CSS_SELECTOR, "#ttft-chart circle.p50")
        replica = find(By.CSS_SELECTOR, "tr.replica")
        assert replica.find_element(By.CLASS_NAME, "replica-hit-rate").text.endswith("%")

        # the timestamp placed before the static prompt is the latest break, explained
        brk = find(By.CSS_SELECTOR, ".brk")
        assert "release-bot" in brk.text and "date-time" in brk.text
        assert brk.find_element(By.CLASS_NAME, "ours").text == "2026-11-27T10:04:39Z"
        assert brk.find_element(By.CLASS_NAME, "theirs").text == "2026-11-27T10:00:01Z"
        assert "message 0" in brk.text

        shot = Path(os.environ.get("PREFIXCACHE_SCREENSHOT_DIR", service.folder)) / "dashboard.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000

        # another user of the tenant, without an admin key: the same figures, but not
        # dora's prompt text, nor the engine-wide counters and replica addresses
        eve = service.key("dash", "eve")
        other = httpx.get(
            f"{service.url}/dashboard?refresh=0", headers={"Authorization": f"Bearer {eve}"}
        ).text
        assert 'id="total-requests" data-value="7"' in other
        assert "2026-11-27T10:04:39Z" not in other and 'class="brk"' not in other
        assert 'id="replicas-note"' in other and 'class="replica"' not in other

        # signing out forgets the session
        find(By.CSS_SELECTOR, "form.inline button").click()
        assert wait.until(ec.presence_of_element_located((By.ID, "sign-in")))


def test_a_revoked_key_signs_the_dashboard_out(recording_service: ServiceProcess) -> None:
    service = recording_service
    key = service.key("dash2", "dan")
    with httpx.Client(base_url=service.url, timeout=30) as http:
        login = http.post("/dashboard/login", data={"key": key}, follow_redirects=False)
        assert login.status_code == 303
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and key not in cookie
        assert http.get("/dashboard").status_code == 200
        key_id = key.split("_")[1]
        assert service.cli("keys", "revoke", key_id).returncode == 0
        assert http.get("/dashboard").status_code == 401


def test_export_trace_then_explain(recording_service: ServiceProcess, tmp_path: Path) -> None:
    """The recorded requests as a trace, explained by the CLI against the engine."""
    service = recording_service
    out = tmp_path / "recorded.jsonl"
    result = service.cli("export-trace", "--out", str(out), "--tenant", "dash")
    assert result.returncode == 0, result.stderr
    assert len(out.read_text().splitlines()) == 7
    result = service.cli(
        "explain", str(out), "--format", "markdown", "--base-url", service_engine_url(service)
    )
    assert result.returncode == 0, result.stderr
    assert "release-bot" in result.stdout and "date-time" in result.stdout
    missing = service.cli("export-trace", "--out", str(out), "--tenant", "nobody")
    assert missing.returncode == 1 and "no recorded prompts" in missing.stderr


def service_engine_url(service: ServiceProcess) -> str:
    for line in service.config.read_text().splitlines():
        if line.strip().startswith("base_url:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("no base_url in the service config")
