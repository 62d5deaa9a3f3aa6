"""The live suite's token ledger: what it counts from vLLM's /metrics, and its budget."""

from __future__ import annotations

from tests.integration.token_ledger import BUDGET, Counters, TokenLedger, increase, parse_counters

METRICS = """\
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 5000.0
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 3000.0
vllm:cache_config_info{block_size="128",enable_prefix_caching="True"} 1.0
process_start_time_seconds 1.7e9
"""


def test_parse_sums_the_counters() -> None:
    counters = parse_counters(METRICS)
    assert counters == Counters(5000.0, 3000.0, 1.7e9) and counters.uncached == 2000
    assert parse_counters("vllm:num_requests_running 0\n") is None


def test_increase_counts_a_restart_from_zero() -> None:
    before = Counters(5000, 3000, 100.0)
    assert increase(before, Counters(6000, 3500, 100.0)) == 500
    assert increase(before, Counters(800, 0, 200.0)) == 800  # a new process
    assert increase(before, Counters(900, 100, None)) == 800  # counters went down
    assert increase(None, Counters(1200, 100, 100.0)) == 1100  # first reading


def test_the_ledger_fails_over_its_budget() -> None:
    ledger = TokenLedger()
    ledger.per_file["test_a.py"] = BUDGET - 1
    assert not ledger.over_budget()
    ledger.per_file["test_b.py"] = 2
    assert ledger.over_budget() and ledger.total == BUDGET + 1
    report = ledger.report()
    assert f"{BUDGET + 1:,}" in report[0] and "OVER BUDGET by 1 tokens" in report[-1]
    assert report[1].split() == [f"{BUDGET - 1:,}", "test_a.py"]
