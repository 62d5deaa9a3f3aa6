"""Plain-text renderings of the trace reports (Markdown, table cells); the terminal tables
are the CLI's (rich), built from the same cells."""

from __future__ import annotations

from .explain import Break, ExplainReport, FamilySummary
from .simulate import SimReport, Study, Versus


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def snippet(text: str, limit: int = 90) -> str:
    """One line, visible whitespace: ``\\n`` and ``\\r`` shown escaped."""
    text = text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def causes_text(summary: FamilySummary, n: int = 3) -> str:
    return ", ".join(f"{cause} ({count})" for cause, count in summary.top_causes(n)) or "-"


def break_title(b: Break) -> str:
    other = f" ({b.reference_family})" if b.reference_family not in ("", b.family) else ""
    return (
        f"{b.family}: request {b.request + 1} (line {b.line}) vs request {b.reference + 1}"
        f"{other}, {b.cause.value}, {b.tokens_lost} tokens lost"
    )


def break_lines(b: Break) -> list[str]:
    return [
        f"at token {b.token}, message {b.message}, character {b.char}",
        f"this request: …{snippet(b.before, 40)}⟦{snippet(b.after_ours, 70)}",
        f"should match: …{snippet(b.before, 40)}⟦{snippet(b.after_theirs, 70)}",
        f"changed: '{snippet(b.ours, 60)}' vs '{snippet(b.theirs, 60)}'",
        f"fix: {b.cause.advice}",
    ]


def explain_markdown(report: ExplainReport, worst: int = 5) -> str:
    total = report.total
    out = [
        "# Why requests missed the prefix cache",
        "",
        f"{total.requests} requests, {total.prompt_tokens} prompt tokens, block size "
        f"{report.block_size}, tokens from {report.tokenizer or 'the trace'}.",
        "",
        f"- reusable (the hit rate with room for everything): **{pct(total.hit_rate)}**",
        f"- measured (the trace's usage): {pct(total.measured_hit_rate)}",
        f"- with the breaks fixed: {pct(total.fixed_hit_rate)} "
        f"({total.tokens_lost} tokens lost in {total.breaks} breaks)",
        "",
        "| family | requests | hit rate | measured | breaks | tokens lost | if fixed "
        "| top causes |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for f in report.families:
        out.append(
            f"| {f.family.replace('|', '/')} | {f.requests} | {pct(f.hit_rate)} | "
            f"{pct(f.measured_hit_rate)} | {f.breaks} | {f.tokens_lost} | "
            f"{pct(f.fixed_hit_rate)} | {causes_text(f)} |"
        )
    breaks = report.worst(worst)
    if breaks:
        out += ["", "## Worst breaks", ""]
        for n, b in enumerate(breaks, 1):
            out.append(f"### {n}. {break_title(b)}")
            out.append("")
            out += [
                f"- `{line}`" if i in (1, 2) else f"- {line}"
                for i, line in enumerate(break_lines(b))
            ]
            out.append("")
    else:
        out += ["", "No breaks: every request kept what its family shares."]
    seconds = report.tokenize_seconds + report.analyze_seconds
    out += [
        "",
        f"Tokenize {report.tokenize_seconds:.2f} s, analyze {report.analyze_seconds:.2f} s "
        f"({seconds:.2f} s).",
        "",
    ]
    return "\n".join(out)


# -- simulate ---------------------------------------------------------------------------


def simulate_cells(r: SimReport, rate: float | None) -> dict[str, str]:
    """One simulation's figures as the table's and the Markdown's cells."""
    s = r.savings(rate)
    return {
        "KV blocks": f"{r.num_blocks:,}",
        "policy": r.policy.value if r.replicas > 1 else "one replica",
        "hit rate": pct(r.hit_rate),
        "prefill tokens saved": f"{r.cached_tokens:,}",
        "GPU-s saved": "-" if s["gpu_seconds_saved"] is None else f"{s['gpu_seconds_saved']:.1f}",
        "TTFT saved/req": "-"
        if s["ttft_saved_mean_s"] is None
        else f"{s['ttft_saved_mean_s'] * 1000:.0f} ms",
        "per replica": "/".join(str(n) for n in r.per_replica_requests),
        "balance": "-" if r.balance is None else f"{r.balance:.2f}",
        "evictions": f"{sum(r.evictions):,}",
    }


def rate_text(rate: float | None, source: object) -> str:
    return f"{rate:,.0f} tokens/s ({source})" if rate else "not given"


def versus_text(versus: Versus) -> str:
    return (
        f"against the trace's measured cached tokens: {versus.equal}/{versus.requests} "
        f"requests equal; hit rate predicted {pct(versus.predicted_hit_rate)} vs measured "
        f"{pct(versus.measured_hit_rate)}"
    )


#: the Markdown's columns (the terminal table adds requests per replica)
MARKDOWN_COLUMNS = (
    "KV blocks",
    "policy",
    "hit rate",
    "prefill tokens saved",
    "GPU-s saved",
    "TTFT saved/req",
    "balance",
    "evictions",
)


def simulate_markdown(study: Study) -> str:
    first = study.reports[0]
    lines = [
        f"Simulated {study.requests} requests: {first.replicas} replica(s), block "
        f"{first.block_size}, prefill rate {rate_text(study.prefill_rate, study.prefill_rate_source)}",
        "",
        "| KV blocks per replica | policy | hit rate | prefill tokens saved | GPU-s saved "
        "| TTFT saved/request | balance | evictions |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in study.reports:
        cells = simulate_cells(r, study.prefill_rate)
        lines.append("| " + " | ".join(cells[c] for c in MARKDOWN_COLUMNS) + " |")
    if study.versus is not None:
        text = versus_text(study.versus)
        lines += ["", text[0].upper() + text[1:] + "."]
    return "\n".join(lines) + "\n"
