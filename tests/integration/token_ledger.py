"""The live suite's work, counted in the tokens the engines had to prefill.

Machines of this kind differ about eight times in prefill speed, so the live suite is
budgeted in work, not in seconds: every engine a test session starts (the shared engine,
the fleet's replicas) is watched, and before and after each test the ledger reads each
one's ``vllm:prefix_cache_queries_total`` and ``vllm:prefix_cache_hits_total`` (tokens):
their difference is what was prefilled uncached, charged to the test's file. A restarted
engine (its ``process_start_time_seconds`` changed, or its counters went down) starts
from zero. A test that stops an engine calls ``LEDGER.account()`` first, so nothing sent
before the stop is lost. At the end the suite prints the total per file and fails when
it is over ``BUDGET``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import httpx

from prefixcache.llm.inspector import parse_engine_metrics

#: the whole live suite's budget of uncached prompt tokens. The target (issue 24) is
#: 60,000, about 6 minutes of prefill at 170 tokens/s, the slowest machines of this kind;
#: the suite measured 135,266 on the compact prompts (per file: `make test`'s summary), so
#: the budget holds it there until the rest is cut (warm-ups pad every agent's role to a
#: 128-token block: a smaller block size is the next lever)
BUDGET = 140_000


@dataclass(frozen=True)
class Counters:
    queries: float
    hits: float
    started: float | None

    @property
    def uncached(self) -> float:
        return self.queries - self.hits


def parse_counters(text: str) -> Counters | None:
    """The prefix-cache counters (summed over engines) and the process start time, as
    the project reads them (``parse_engine_metrics``); None for a server that is not
    vLLM (no ``vllm:cache_config_info``)."""
    stats = parse_engine_metrics(text)
    if stats.block_size is None:
        return None
    return Counters(stats.queries, stats.hits, stats.started_at)


def increase(before: Counters | None, after: Counters) -> float:
    """Uncached tokens prefilled between two readings of one engine (a restart in
    between: everything the new process counted)."""
    restarted = (
        before is None
        or (after.started is not None and after.started != before.started)
        or after.queries < before.queries
        or after.hits < before.hits
    )
    if restarted or before is None:
        return after.uncached
    return after.uncached - before.uncached


@dataclass
class TokenLedger:
    budget: int = BUDGET
    #: engine URL -> its last reading
    last: dict[str, Counters | None] = field(default_factory=dict)
    per_file: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    current: str = "(set-up)"

    def watch(self, url: str) -> None:
        """Count this engine from now on (its tokens so far are charged to the current file)."""
        self.last.setdefault(url, None)

    def read(self, url: str) -> Counters | None:
        try:
            answer = httpx.get(f"{url}/metrics", timeout=10)
        except httpx.HTTPError:
            return None
        return parse_counters(answer.text) if answer.status_code == 200 else None

    def account(self) -> None:
        """Read every watched engine and charge what it prefilled to the current file
        (an engine that does not answer keeps its last reading)."""
        for url, before in list(self.last.items()):
            after = self.read(url)
            if after is None:
                continue
            self.per_file[self.current] += increase(before, after)
            self.last[url] = after

    @property
    def total(self) -> int:
        return round(sum(self.per_file.values()))

    def over_budget(self) -> bool:
        return self.total > self.budget

    def report(self) -> list[str]:
        lines = [
            f"uncached prompt tokens the engines prefilled: {self.total:,} (budget {self.budget:,})"
        ]
        for name, tokens in sorted(self.per_file.items(), key=lambda kv: -kv[1]):
            if round(tokens):
                lines.append(f"  {round(tokens):>8,}  {name}")
        if self.over_budget():
            lines.append(
                f"OVER BUDGET by {self.total - self.budget:,} tokens: shorten the prompts or "
                "the requests of the files above (tests/prompts_compact, fewer turns)"
            )
        return lines


#: the one ledger of a test session
LEDGER = TokenLedger()
