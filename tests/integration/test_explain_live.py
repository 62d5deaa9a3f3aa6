"""``explain`` and ``simulate`` against the real engine: the crafted causes through the
server's own tokenizer, and the benchmark's own trace (its naive arm must point at the
dynamic fields placed before the static prompt; the simulator must predict every
request's cached tokens as vLLM reported them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from prefixcache import LocalEngine
from prefixcache.llm.inspector import EngineInspector
from prefixcache.traces.explain import explain
from prefixcache.traces.tokenize import ServerTokenizer, tokenize_trace

from ..explain_cases import CASES, Case

pytestmark = pytest.mark.integration


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefixcache", *args], capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.cause)
def test_each_cause_through_the_servers_tokenizer(
    engine: LocalEngine, block_size: int, case: Case
) -> None:
    records = case.records()
    tokenizer = ServerTokenizer(engine.base_url, engine.model)
    tokens, _ = tokenize_trace(records, tokenizer)
    (brk,) = explain(records, tokens, block_size).breaks
    assert brk.cause.value == case.cause
    assert (brk.message, brk.char) == (0, case.char)
    assert brk.tokens_lost > len(tokens[0]) // 2  # the static text after the break
    # the break's token is where the rendered prompt reaches the changed character
    with EngineInspector(engine.base_url, engine.model) as inspector:
        upto = inspector.detokenize(tokens[1][: brk.token])
        after = inspector.detokenize(tokens[1][: brk.token + 1])
    start = upto.index(case.second[:5])  # where the system text starts
    assert len(upto) - start <= case.char < len(after) - start


@pytest.fixture(scope="module")
def bench_trace(
    engine: LocalEngine, compact_config_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("bench-trace")
    result = cli(
        "--config",
        str(compact_config_file),
        "bench",
        "--scenario",
        "single",
        "--arms",
        "naive,optimized",
        "--max-tokens",
        "2",
        "--tasks",
        "6",
        "--base-url",
        engine.base_url,
        "--out-dir",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return out / "trace.jsonl"


def _explain(trace: Path, engine: LocalEngine, *extra: str) -> dict[str, Any]:
    result = cli(
        "explain",
        str(trace),
        "--base-url",
        engine.base_url,
        "--format",
        "json",
        "--out",
        str(trace.with_suffix(".explain.json")),
        *extra,
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(trace.with_suffix(".explain.json").read_text())
    return data


def test_explain_points_the_naive_arm_at_its_dynamic_fields(
    bench_trace: Path, engine: LocalEngine
) -> None:
    naive = _explain(bench_trace, engine, "--label", "arm=naive")
    breaks = [r["break"] for r in naive["per_request"] if r["break"]]
    measured = [r for r in naive["per_request"] if r["index"] > 0]
    assert len(breaks) == len(measured) > 0  # every request after the first broke
    for brk in breaks:
        # in the system prompt, inside the dynamic context that comes first
        assert brk["message"] == 0 and brk["token"] < 64
        assert "Dynamic Context" in brk["before"]
        assert brk["cause"] in {"other", "id", "date-time"}
        assert brk["tokens_lost"] > 500  # the whole static prompt after it
    assert naive["fixed_hit_rate"] > naive["hit_rate"] + 0.5
    assert naive["measured_hit_rate"] == pytest.approx(naive["hit_rate"])
    optimized = _explain(bench_trace, engine, "--label", "arm=optimized")
    assert optimized["tokens_lost"] == 0 and not optimized["worst_breaks"]
    assert optimized["hit_rate"] > naive["hit_rate"] + 0.3
    failing = cli(
        "explain",
        str(bench_trace),
        "--base-url",
        engine.base_url,
        "--label",
        "arm=naive",
        "--fail-under",
        "50",
    )
    assert failing.returncode == 1 and "under --fail-under 50%" in failing.stderr


def test_simulate_predicts_every_request_of_the_benchmark(
    bench_trace: Path, engine: LocalEngine
) -> None:
    out = bench_trace.with_suffix(".simulate.json")
    result = cli(
        "simulate",
        str(bench_trace),
        "--base-url",
        engine.base_url,
        "--format",
        "json",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    versus = data["measured"]
    # warm-ups included; nothing evicted: predicted == measured, request by request
    assert versus["requests"] == data["requests"] > 10
    assert versus["equal"] == versus["requests"], versus["first_differences"]
    assert data["runs"][0]["kv_blocks_per_replica"] > 100
    assert data["prefill_rate_source"] == "trace" and data["prefill_tokens_per_s"] > 0
