"""The cache simulator: request by request equal to vLLM's own KVCacheManager (driven
offline, no model), eviction included; routing policies; the CLI."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prefixcache.cli.app import app
from prefixcache.traces.records import TraceRecord, write_trace
from prefixcache.traces.simulate import (
    BlockPool,
    Policy,
    SimRequest,
    Simulator,
    bytes_per_token,
    kv_blocks,
    simulate,
)


def vllm_cached_tokens(
    requests: Sequence[SimRequest], block_size: int, num_blocks: int
) -> list[int]:
    """Replay ``requests`` one at a time through vLLM v1's KVCacheManager: prefill, decode
    ``output_tokens`` tokens, free. Returns what vLLM found cached for each request."""
    import torch
    from vllm.sampling_params import SamplingParams
    from vllm.utils.hashing import sha256
    from vllm.v1.core.kv_cache_manager import KVCacheManager
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.request import Request

    init_none_hash(sha256)
    spec = FullAttentionSpec(
        block_size=block_size, num_kv_heads=1, head_size=8, dtype=torch.float16
    )
    config = KVCacheConfig(
        num_blocks=num_blocks,
        kv_cache_tensors=[],
        kv_cache_groups=[KVCacheGroupSpec(["layer.0"], spec)],
    )
    manager = KVCacheManager(
        config,
        max_model_len=1 << 20,
        scheduler_block_size=block_size,
        hash_block_size=block_size,
        enable_caching=True,
    )
    hasher = get_request_block_hasher(block_size, sha256)
    out = []
    for i, r in enumerate(requests):
        request = Request(
            request_id=str(i),
            prompt_token_ids=list(r.tokens),
            sampling_params=SamplingParams(max_tokens=r.output_tokens),
            pooling_params=None,
            cache_salt=r.salt,
            block_hasher=hasher,
        )
        blocks, hit, _ = manager.get_computed_blocks(request)
        assert manager.allocate_slots(request, len(r.tokens) - hit, hit, blocks) is not None
        request.num_computed_tokens = len(r.tokens)
        outputs = [1_000_000 + i * 1000 + k for k in range(r.output_tokens)]
        for token in outputs[:-1]:
            request.append_output_token_ids(token)
            assert manager.allocate_slots(request, 1) is not None
            request.num_computed_tokens += 1
        request.append_output_token_ids(outputs[-1])
        manager.free(request)
        out.append(hit)
    return out


def workload(seed: int, n: int = 300) -> list[SimRequest]:
    """Agents' shared prefixes of various lengths, tails, outputs, two salts."""
    rng = random.Random(seed)
    prefixes = [[rng.randrange(50_000) for _ in range(rng.randrange(10, 300))] for _ in range(12)]
    return [
        SimRequest(
            tokens=rng.choice(prefixes)
            + [rng.randrange(50_000) for _ in range(rng.randrange(1, 80))],
            output_tokens=rng.randrange(1, 40),
            salt=rng.choice([None, "tenant-a"]),
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize(("seed", "num_blocks"), [(1, 4000), (2, 150), (3, 60), (4, 40)])
def test_equal_to_vllm_request_by_request(seed: int, num_blocks: int) -> None:
    requests = workload(seed)
    expected = vllm_cached_tokens(requests, 16, num_blocks)
    sim = Simulator(block_size=16, num_blocks=num_blocks)
    got = [sim.replay(r).cached_tokens for r in requests]
    assert got == expected
    evictions = sum(sim.report().evictions)
    assert (evictions > 0) == (num_blocks < 4000)  # the small pools did evict
    assert sum(got) > 0


def test_lru_evicts_the_oldest_and_a_request_tail_first() -> None:
    pool = BlockPool(4)  # 3 usable blocks
    a = pool.take(2)
    pool.cache(a[0], 100)
    pool.cache(a[1], 101)
    pool.release(a)  # tail (101) before head (100) in the queue
    b = pool.take(2)  # the one never-used block, then 101's block
    assert pool.lookup([100, 101]) == [a[0]] and a[1] in b
    assert pool.evictions == 1


def test_last_token_is_recomputed_and_salts_separate() -> None:
    tokens = list(range(64))
    sim = Simulator(block_size=16, num_blocks=100)
    assert [sim.replay(SimRequest(tokens)).cached_tokens for _ in range(2)] == [0, 48]
    assert sim.replay(SimRequest(tokens, salt="other")).cached_tokens == 0


def test_a_pool_smaller_than_one_request_is_an_error() -> None:
    with pytest.raises(MemoryError, match="raise --kv-blocks"):
        Simulator(block_size=16, num_blocks=3).replay(SimRequest(list(range(100))))


def _sessions(n_sessions: int = 8, turns: int = 4) -> list[SimRequest]:
    rng = random.Random(7)
    system = list(range(200))
    histories = {s: list(system) for s in range(n_sessions)}
    out = []
    for _ in range(turns):
        for s in range(n_sessions):
            histories[s] += [rng.randrange(1000, 50_000) for _ in range(40)]
            out.append(SimRequest(tokens=list(histories[s]), output_tokens=8, session=f"s{s}"))
    return out


def test_policies() -> None:
    # 7 sessions interleaved: round robin moves every session from replica to replica
    requests = _sessions(7)
    reports = {
        p: simulate(requests, block_size=16, num_blocks=400, replicas=2, policy=p) for p in Policy
    }
    sticky = reports[Policy.STICKY_LEAST_LOADED]
    assert sticky.per_replica_requests == [16, 12]  # sessions 4 and 3
    by_session: dict[str, set[int]] = {}
    for req, res in zip(requests, reports[Policy.SESSION_HASH].results, strict=True):
        by_session.setdefault(str(req.session), set()).add(res.replica)
    assert all(len(r) == 1 for r in by_session.values())
    rr = reports[Policy.ROUND_ROBIN]
    assert [r.replica for r in rr.results[:4]] == [0, 1, 0, 1]
    assert rr.per_replica_requests == [14, 14]
    # session affinity keeps each conversation's history on one replica: more hits
    assert (sticky.hit_rate or 0) > (rr.hit_rate or 0)
    assert (reports[Policy.CACHE_AWARE].hit_rate or 0) >= (sticky.hit_rate or 0) - 0.02
    one = simulate(requests, block_size=16, num_blocks=800)
    assert (one.hit_rate or 0) >= (sticky.hit_rate or 0)


def test_kv_sizes() -> None:
    llama3_8b = bytes_per_token(layers=32, kv_heads=8, head_dim=128, dtype_bytes=2)
    assert llama3_8b == 131_072
    assert kv_blocks(kv_bytes=2**30, bytes_per_token=llama3_8b, block_size=16) == 512


def test_cli_simulate(tmp_path: Path) -> None:
    requests = _sessions()
    records = [
        TraceRecord(
            messages=({"role": "user", "content": "x"},),
            session=r.session,
            prompt_token_ids=tuple(r.tokens),
            completion_tokens=r.output_tokens,
            prompt_tokens=len(r.tokens),
            cached_tokens=c.cached_tokens,
            ttft=0.5,
        )
        for r, c in zip(
            requests, simulate(requests, block_size=16, num_blocks=800).results, strict=True
        )
    ]
    trace = tmp_path / "t.jsonl"
    with trace.open("w") as out:
        write_trace(records, out)
    runner = CliRunner()
    base = ["simulate", str(trace), "--block-size", "16"]
    result = runner.invoke(
        app, [*base, "--kv-blocks", "800", "--format", "json", "--out", str(tmp_path / "s.json")]
    )
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["measured"]["equal"] == len(records) == data["measured"]["requests"]
    assert data["prefill_rate_source"] == "trace" and data["prefill_tokens_per_s"] > 0
    assert data["runs"][0]["gpu_seconds_saved"] > 0
    result = runner.invoke(app, [*base, "--kv-blocks", "400", "--replicas", "2", "--policy", "all"])
    assert result.exit_code == 0, result.output
    for policy in Policy:
        assert policy.value in result.output
    assert runner.invoke(app, base).exit_code == 2  # no KV size
    assert runner.invoke(app, [*base, "--kv-blocks", "9", "--policy", "nope"]).exit_code == 2
    result = runner.invoke(app, [*base, "--kv-blocks", "3"])
    assert result.exit_code == 1 and "raise --kv-blocks" in result.output
