"""The dashboard's page and sign-in cookie, without a server (the live browser test is
tests/integration/test_dashboard_live.py)."""

from __future__ import annotations

from datetime import datetime

from prefixcache.service.dashboard.api_router import (
    SESSION_S,
    cookie_key_id,
    session_cookie,
)
from prefixcache.service.dashboard.data import DashboardData, ReplicaFigures, TtftPoint, ttft_series
from prefixcache.service.dashboard.render import hit_bar, login_page, page
from prefixcache.service.protocol import GroupStats, StatsResponse


def test_cookie_round_trip_expiry_and_tampering() -> None:
    value = session_cookie("secret", "abcd1234abcd1234", now=1000.0)
    assert cookie_key_id("secret", value, now=1001.0) == "abcd1234abcd1234"
    assert cookie_key_id("secret", value, now=1000.0 + SESSION_S + 1) is None  # expired
    assert cookie_key_id("other-secret", value, now=1001.0) is None
    key_id, expires, mac = value.split(".")
    assert cookie_key_id("secret", f"ffff1234abcd1234.{expires}.{mac}", now=1001.0) is None
    assert cookie_key_id("secret", f"{key_id}.{int(expires) + 99}.{mac}", now=1001.0) is None
    assert cookie_key_id("secret", "garbage", now=1001.0) is None


def _group(key: str, rate: float | None) -> GroupStats:
    return GroupStats(
        key=key,
        requests=3,
        prompt_tokens=300,
        cached_tokens=None,
        hit_rate=rate,
        ttft_p50=0.1234,
        ttft_p95=0.5,
        expected_hit_rate="95-99%",
        versus_expected="below",
    )


def test_page_escapes_names_and_has_no_script() -> None:
    evil = '<script>alert("x")</script>'
    stats = StatsResponse(
        tenant="t",
        requests=3,
        hit_rate=0.5,
        by_agent=[_group(evil, 0.5)],
        by_tier=[_group("TIER_1", None)],
    )
    data = DashboardData(
        tenant=evil,
        stats=stats,
        series=[TtftPoint(datetime(2026, 11, 27, 10, m), 2, 0.1 * m, 0.2 * m) for m in range(3)],
        replicas=[
            ReplicaFigures("http://127.0.0.1:1", 50.0, 100.0, 3.0),
            ReplicaFigures("http://127.0.0.1:2", None, None, None, "/metrics: ConnectError"),
        ],
        router=True,
        breaks=[],
        breaks_note="No cache breaks among the latest recorded requests.",
        admin=True,
    )
    html = page(data, refresh=10)
    assert "<script" not in html and "&lt;script&gt;" in html
    assert '<meta http-equiv="refresh" content="10">' in html
    assert 'id="total-hit-rate" data-value="0.5">50.0%</span>' in html
    assert '<td class="hit-rate" data-value="">-</td>' in html  # unknown, not 0
    assert '<td class="ttft-p50" data-value="0.1234">0.123 s</td>' in html
    assert "replicas behind vllm-router" in html and "ConnectError" in html
    assert html.count('<circle class="p50"') == 3
    assert "refresh" not in page(data, refresh=0).split("<title>")[0]
    assert 'name="key"' in login_page("bad <key>") and "bad &lt;key&gt;" in login_page("bad <key>")


def test_hit_bar_shows_the_expected_band() -> None:
    bar = hit_bar(0.5, "80-90%", width=100)
    assert 'x="80.0" width="10.0"' in bar and 'width="50.0"' in bar
    assert "<rect" in hit_bar(None, "not a range")


def test_ttft_series_per_minute() -> None:
    now = datetime(2026, 11, 27, 10, 30)
    rows: list[tuple[datetime, float | None]] = [
        (datetime(2026, 11, 27, 10, 29, s), t) for s, t in ((1, 0.1), (2, 0.3), (3, None))
    ] + [(datetime(2026, 11, 27, 8, 0), 9.0)]  # over an hour ago
    (point,) = ttft_series(rows, now)
    assert (point.requests, point.p50) == (3, 0.2)
