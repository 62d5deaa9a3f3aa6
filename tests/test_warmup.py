"""The warm-up planner: which (tenant, agent) prefixes fit the engine's KV budget."""

from __future__ import annotations

from prefixcache.service.warmup import WarmItem, plan_warmup

BLOCKS = {"a": [1, 2, 3], "b": [1, 2, 4, 5]}  # a and b share their first two blocks


def test_most_used_first_and_shared_blocks_counted_once() -> None:
    warm, cold = plan_warmup(["T1", "T2"], ["a", "b"], BLOCKS, {("T2", "b"): 5}, 20, 0.5)
    assert warm == [
        WarmItem("T2", "b", 4),  # the most used pair first
        WarmItem("T1", "a", 3),
        WarmItem("T1", "b", 2),  # blocks 1 and 2 are T1's already
        WarmItem("T2", "a", 1),  # exactly the budget of 10
    ]
    assert cold == []


def test_what_does_not_fit_is_left_cold() -> None:
    warm, cold = plan_warmup(["T1", "T2"], ["a", "b"], BLOCKS, {("T2", "b"): 5}, 18, 0.5)
    assert [(w.tenant, w.agent) for w in warm] == [("T2", "b"), ("T1", "a"), ("T1", "b")]
    assert cold == [WarmItem("T2", "a", 1)]  # 9 used; one more block would pass 9


def test_tenants_never_share_blocks_and_no_capacity_means_everything() -> None:
    warm, cold = plan_warmup(["T1", "T2"], ["a"], BLOCKS, {}, None, 0.5)
    assert [w.new_blocks for w in warm] == [3, 3] and cold == []
    warm, cold = plan_warmup(["T1"], ["a", "b"], BLOCKS, {}, 4, 0.5)
    assert warm == [] and [c.agent for c in cold] == ["a", "b"]  # nothing fits 2 blocks
