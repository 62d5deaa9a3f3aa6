"""The dashboard as one server-rendered HTML page with inline SVG charts: no JavaScript,
no build step, nothing fetched from elsewhere (the page's Content-Security-Policy forbids
scripts outright). It reloads itself every ``refresh`` seconds.

Every figure sits in an element with a stable class or id and its raw value in
``data-value``, so a browser test can read what a user sees and compare it with
``GET /stats``.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from ...errors import ConfigError
from ...prompts.tiers import parse_hit_range
from ...traces.explain import Break
from ...traces.render import pct, snippet
from ..protocol import FamilyStats, GroupStats
from .data import DashboardData, ReplicaFigures, TtftPoint

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2433;
background:#f5f6f8}
header{background:#1d2433;color:#fff;padding:14px 24px;display:flex;gap:28px;
align-items:baseline;flex-wrap:wrap}
header h1{font-size:18px;margin:0}header .big{font-size:26px;font-weight:600}
main{padding:16px 24px;display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));
gap:16px}
section{background:#fff;border-radius:8px;padding:12px 16px;box-shadow:0 1px 2px #0001;
overflow-x:auto}section.wide{grid-column:1/-1}
h2{font-size:15px;margin:4px 0 10px}table{border-collapse:collapse;width:100%}
th,td{padding:4px 6px;text-align:right;border-bottom:1px solid #eef0f3;white-space:nowrap}
th:first-child,td:first-child{text-align:left}td.url{white-space:normal;word-break:break-all}th{font-weight:600;color:#5b6475}
.below{color:#b42318;font-weight:600}.within{color:#067647}.above{color:#175cd3}
.muted{color:#6b7280}.note{color:#6b7280;font-size:13px;margin:6px 0 0}
.brk{border-top:1px solid #eef0f3;padding:8px 0}.brk code{background:#f3f4f6;padding:1px 4px;
border-radius:3px;white-space:pre-wrap;word-break:break-all}
.cause{display:inline-block;background:#fef0c7;color:#93370d;border-radius:10px;
padding:0 8px;font-size:12px;margin-left:6px}
.legend span{margin-right:14px}.sw{display:inline-block;width:10px;height:10px;
margin-right:4px;vertical-align:middle}
form.inline{display:inline;margin-left:auto}button{cursor:pointer}
"""


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def _raw(value: float | None) -> str:
    return "" if value is None else repr(value)


def hit_bar(rate: float | None, expected: str | None, width: int = 160) -> str:
    """A bar for the hit rate over the band of the tier's expected range."""
    parts = [
        f'<svg class="bar" width="{width}" height="14" role="img" '
        f'aria-label="hit rate {pct(rate)}"><rect width="{width}" height="14" '
        'fill="#eef0f3"/>'
    ]
    if expected:
        try:
            band: tuple[float, float] | None = parse_hit_range(expected)
        except (ValueError, ConfigError):
            band = None
        if band is not None:
            low, high = band
            parts.append(
                f'<rect x="{low * width:.1f}" width="{(high - low) * width:.1f}" '
                'height="14" fill="#abefc6"/>'
            )
    if rate is not None:
        parts.append(f'<rect y="3" width="{rate * width:.1f}" height="8" fill="#2e90fa"/>')
    parts.append("</svg>")
    return "".join(parts)


def group_table(kind: str, groups: Sequence[GroupStats]) -> str:
    if not groups:
        return '<p class="muted">No requests yet.</p>'
    rows = []
    for g in groups:
        rows.append(
            f'<tr class="{kind}" data-key="{escape(g.key)}">'
            f"<td>{escape(g.key)}</td>"
            f'<td class="requests" data-value="{g.requests}">{g.requests}</td>'
            f'<td class="hit-rate" data-value="{_raw(g.hit_rate)}">{pct(g.hit_rate)}</td>'
            f"<td>{hit_bar(g.hit_rate, g.expected_hit_rate)}</td>"
            f'<td class="expected">{escape(g.expected_hit_rate or "-")}</td>'
            f'<td class="verdict {escape(g.versus_expected)}">{escape(g.versus_expected)}</td>'
            f'<td class="ttft-p50" data-value="{_raw(g.ttft_p50)}">{seconds(g.ttft_p50)}</td>'
            f'<td class="ttft-p95" data-value="{_raw(g.ttft_p95)}">{seconds(g.ttft_p95)}</td>'
            "</tr>"
        )
    head = (
        f"<tr><th>{kind}</th><th>requests</th><th>hit rate</th><th></th><th>expected</th>"
        "<th>vs expected</th><th>TTFT p50</th><th>TTFT p95</th></tr>"
    )
    return f'<table id="{kind}-table">{head}{"".join(rows)}</table>'


def ttft_chart(series: Sequence[TtftPoint], width: int = 600, height: int = 200) -> str:
    if not series:
        return '<p class="muted">No requests in the last hour.</p>'
    values = [v for p in series for v in (p.p50, p.p95) if v is not None] or [1.0]
    top = max(values) * 1.1 or 1.0
    left, bottom, right, top_pad = 48, 24, 10, 10
    plot_w, plot_h = width - left - right, height - bottom - top_pad
    n = len(series)

    def x(i: int) -> float:
        return left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v: float) -> float:
        return top_pad + plot_h * (1 - v / top)

    out = [
        f'<svg id="ttft-chart" width="{width}" height="{height}" role="img" '
        'aria-label="TTFT p50 and p95 per minute">'
    ]
    for frac in (0, 0.5, 1):
        yy = y(top * frac)
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eef0f3"/>'
        )
        out.append(
            f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#6b7280">{top * frac:.2f}s</text>'
        )
    for name, color in (("p95", "#f79009"), ("p50", "#2e90fa")):
        points = [(x(i), y(v)) for i, p in enumerate(series) if (v := getattr(p, name)) is not None]
        if len(points) > 1:
            path = " ".join(f"{a:.1f},{b:.1f}" for a, b in points)
            out.append(
                f'<polyline class="{name}" points="{path}" fill="none" '
                f'stroke="{color}" stroke-width="2"/>'
            )
        for a, b in points:
            out.append(f'<circle class="{name}" cx="{a:.1f}" cy="{b:.1f}" r="2.5" fill="{color}"/>')
    for i in sorted({0, n - 1}):
        label = series[i].minute.strftime("%H:%M")
        out.append(
            f'<text x="{x(i):.1f}" y="{height - 6}" text-anchor="middle" '
            f'font-size="11" fill="#6b7280">{label} UTC</text>'
        )
    out.append("</svg>")
    legend = (
        '<div class="legend"><span><i class="sw" style="background:#2e90fa"></i>p50'
        '</span><span><i class="sw" style="background:#f79009"></i>p95</span>'
        f'<span class="muted">{sum(p.requests for p in series)} requests, '
        f"{n} minute{'s' if n != 1 else ''}</span></div>"
    )
    return "".join(out) + legend


def replica_table(replicas: Sequence[ReplicaFigures], router: bool) -> str:
    rows = []
    for n, r in enumerate(replicas):
        problem = f' <span class="below">{escape(r.problem)}</span>' if r.problem else ""
        rows.append(
            f'<tr class="replica" data-key="{escape(r.url)}"><td class="url">{n + 1}. {escape(r.url)}'
            f"{problem}</td>"
            f'<td class="replica-requests">{"-" if r.requests is None else f"{r.requests:.0f}"}</td>'
            f'<td class="replica-hits">{"-" if r.hits is None else f"{r.hits:,.0f}"}</td>'
            f'<td class="replica-queries">{"-" if r.queries is None else f"{r.queries:,.0f}"}</td>'
            f'<td class="replica-hit-rate">{pct(r.hit_rate)}</td>'
            f"<td>{hit_bar(r.hit_rate, None, 70)}</td></tr>"
        )
    where = "replicas behind vllm-router" if router else "one engine (no router)"
    return (
        '<table id="replica-table"><tr><th>replica</th><th>requests</th><th>hit tokens</th>'
        f"<th>queried tokens</th><th>hit rate</th><th></th></tr>{''.join(rows)}</table>"
        f'<p class="note">{where}; engine-wide counters from each replica\'s /metrics: '
        "every tenant's traffic since the replica started.</p>"
    )


def _of(brk: Break) -> str:
    return f" ({brk.reference_family})" if brk.reference_family not in ("", brk.family) else ""


def replicas_section(data: DashboardData) -> str:
    """Engine-wide counters and replica URLs: shown to admin keys only."""
    if not data.admin:
        return (
            '<section><h2>Prefix cache per replica</h2><p class="note" id="replicas-note">'
            "Engine-wide figures (every tenant's traffic) and replica addresses are shown "
            "to admin keys only (<code>keys create --admin</code>).</p></section>"
        )
    return f"<section><h2>Prefix cache per replica</h2>{replica_table(data.replicas, data.router)}</section>"


def breaks_html(data: DashboardData) -> str:
    out = []
    for brk, row in data.breaks:
        out.append(
            f'<div class="brk" data-record="{row.id}"><b>{escape(brk.family)}</b>'
            f'<span class="cause">{escape(brk.cause.value)}</span> '
            f'<span class="muted">{row.created_at:%H:%M:%S} UTC · {brk.tokens_lost} tokens '
            f"lost · token {brk.token}, message {brk.message}, character {brk.char}</span><br>"
            f"this request: <code>…{escape(snippet(brk.before, 40))}⟦"
            f"{escape(snippet(brk.after_ours, 60))}</code><br>"
            f"previous{escape(_of(brk))}: <code>…{escape(snippet(brk.before, 40))}⟦"
            f"{escape(snippet(brk.after_theirs, 60))}</code><br>"
            f'changed: <code class="ours">{escape(snippet(brk.ours, 60))}</code> was '
            f'<code class="theirs">{escape(snippet(brk.theirs, 60))}</code><br>'
            f'<span class="muted">fix: {escape(brk.cause.advice)}</span></div>'
        )
    note = (
        f'<p class="note" id="breaks-note">{escape(data.breaks_note)}</p>'
        if (data.breaks_note)
        else ""
    )
    return "".join(out) + note


def family_table(families: Sequence[FamilyStats]) -> str:
    """The stabilizer's families: measured, predicted as written and as stabilized, and
    the shapes of what moves."""
    if not families:
        return (
            '<p class="muted">No gateway request families yet (service.stabilize is off, '
            "or no request came through /v1).</p>"
        )
    rows = []
    for f in families:
        moves = ", ".join(f.moves[:4]) + (" …" if len(f.moves) > 4 else "") or "-"
        rows.append(
            f'<tr class="family" data-key="{escape(f.family)}">'
            f"<td>{escape(f.family)}</td>"
            f'<td class="requests" data-value="{f.requests}">{f.requests}</td>'
            f'<td class="hit-rate" data-value="{_raw(f.hit_rate)}">{pct(f.hit_rate)}</td>'
            f'<td class="predicted" data-value="{_raw(f.predicted_hit_rate)}">'
            f"{pct(f.predicted_hit_rate)}</td>"
            f'<td class="stabilized" data-value="{_raw(f.stabilized_hit_rate)}">'
            f"{pct(f.stabilized_hit_rate)}</td>"
            f'<td class="rewritten" data-value="{f.rewritten}">{f.rewritten}</td>'
            f'<td class="moves">{escape(moves)}</td></tr>'
        )
    head = (
        "<tr><th>family</th><th>requests</th><th>hit rate</th><th>predicted as written"
        "</th><th>predicted if stabilized</th><th>rewritten</th><th>what moves</th></tr>"
    )
    return f'<table id="family-table">{head}{"".join(rows)}</table>'


def page(data: DashboardData, refresh: int) -> str:
    s = data.stats
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh > 0 else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">{meta}
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>prefixcache · {escape(data.tenant)}</title><style>{CSS}</style></head>
<body><header><h1>prefixcache</h1>
<span>tenant <b id="tenant">{escape(data.tenant)}</b></span>
<span>requests <span class="big" id="total-requests" data-value="{s.requests}">{s.requests}</span></span>
<span>hit rate <span class="big" id="total-hit-rate" data-value="{_raw(s.hit_rate)}">{pct(s.hit_rate)}</span></span>
<span class="muted">{data.generated_at:%Y-%m-%d %H:%M:%S} UTC{f", every {refresh} s" if refresh > 0 else ""}</span>
<form class="inline" method="post" action="/dashboard/logout"><button>Sign out</button></form>
</header><main>
<section class="wide"><h2>Hit rate per agent, against the tier's expected range</h2>{group_table("agent", s.by_agent)}</section>
<section class="wide"><h2>Hit rate per tier</h2>{group_table("tier", s.by_tier)}
<p class="note">Bars: measured hit rate (blue) over the expected range (green).</p></section>
<section class="wide"><h2>Gateway families: the stabilizer</h2>{family_table(s.families)}
<p class="note">Predicted block-exact with the engine's tokenizer; "if stabilized" is what
service.stabilize: on would measure. What moves: line shapes, numbers and ids masked.</p></section>
<section><h2>TTFT per minute (last hour)</h2>{ttft_chart(data.series)}</section>
{replicas_section(data)}
<section class="wide"><h2>Latest cache breaks</h2>{breaks_html(data)}</section>
</main></body></html>
"""


def login_page(message: str | None = None) -> str:
    problem = f'<p class="below" id="login-error">{escape(message)}</p>' if message else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>prefixcache · sign in</title>
<style>{CSS}</style></head><body><header><h1>prefixcache dashboard</h1></header>
<main><section><h2>Sign in with an API key</h2>{problem}
<form method="post" action="/dashboard/login">
<input type="password" name="key" id="key" size="60" autocomplete="off"
 placeholder="pc_..." required> <button id="sign-in">Sign in</button></form>
<p class="note">The page shows your tenant's figures. Create a key with
<code>prefixcache keys create --tenant T --user U</code>.</p></section></main></body></html>
"""
