from __future__ import annotations

import warnings

import pytest

from prefixcache import (
    AgentTier,
    AgentTierMap,
    ConfigError,
    UnknownAgentError,
    UnknownAgentWarning,
    get_agent_tier,
    get_base_prompt_for_agent,
    get_cache_hit_expectation,
    get_tier_statistics,
    list_agents_by_tier,
)

TIER_1 = [
    "frontend-engineer",
    "backend-engineer",
    "senior-backend-engineer",
    "database-engineer",
    "documentation-engineer",
    "testing-engineer",
    "devops-engineer",
    "project-manager",
]
TIER_2 = ["code-reviewer", "performance-engineer", "security-auditor", "code-refactorer"]
TIER_3 = [
    "code-skeptic",
    "systems-architect",
    "ai-ml-engineer",
    "multimodal-engineer",
    "frontend-designer",
    "prd-writer",
    "content-writer",
    "memory-monitor",
    "project-task-planner",
]


def test_the_guides_22_agents_in_4_tiers() -> None:
    assert list_agents_by_tier(AgentTier.TIER_1_DEFAULT) == TIER_1
    assert list_agents_by_tier(AgentTier.TIER_2_ANALYSIS) == TIER_2
    assert list_agents_by_tier(AgentTier.TIER_3_SPECIALIZED) == TIER_3
    assert list_agents_by_tier(AgentTier.TIER_4_ORCHESTRATOR) == ["orchestrator"]
    stats = get_tier_statistics()
    assert sum(s["agent_count"] for s in stats.values()) == 22
    assert stats["TIER_1_DEFAULT"]["expected_hit_rate"] == "90-95%"
    assert all(s["measured_hit_rate"].endswith("%") for s in stats.values())


def test_tier_statistics_answer_to_the_guides_keys() -> None:
    """Code ported from the guide's reference implementation reads these keys."""
    stats = get_tier_statistics()
    tier1 = stats["TIER_1_DEFAULT"]
    assert tier1["count"] == len(tier1["agents"]) == len(TIER_1)
    assert tier1["base_prompt"] == "default.agent.system.main"
    assert tier1["cache_hit_rate"] == "90-95%"
    assert stats["TIER_4_ORCHESTRATOR"]["cache_hit_rate"] == "50-70%"


def test_guide_examples() -> None:
    assert get_agent_tier("frontend-engineer") is AgentTier.TIER_1_DEFAULT
    assert get_base_prompt_for_agent("frontend-engineer") == "default.agent.system.main"
    assert get_base_prompt_for_agent("orchestrator") == "orchestrator.system_prompt"
    assert get_cache_hit_expectation("frontend-engineer") == "90-95%"
    assert get_cache_hit_expectation("security-auditor") == "70-80%"
    assert get_cache_hit_expectation("prd-writer") == "40-60%"
    assert get_cache_hit_expectation("orchestrator") == "50-70%"


@pytest.mark.parametrize("name", ["Frontend_Engineer", "  frontend-engineer ", "FRONTEND-ENGINEER"])
def test_names_are_normalised(name: str) -> None:
    assert get_agent_tier(name) is AgentTier.TIER_1_DEFAULT


def test_unknown_agent_falls_back_with_one_warning_per_name() -> None:
    tiers = AgentTierMap()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            assert tiers.get_agent_tier("frontend-enginer") is AgentTier.TIER_1_DEFAULT
        tiers.get_agent_tier("someone-else")
    relevant = [w for w in caught if issubclass(w.category, UnknownAgentWarning)]
    assert len(relevant) == 2
    assert "frontend-engineer" in str(relevant[0].message)  # suggests the close name


def test_strict_mode_raises() -> None:
    with pytest.raises(UnknownAgentError, match="frontend-engineer"):
        AgentTierMap(strict=True).get_agent_tier("frontend-enginer")


def test_tier_map_extends_from_config() -> None:
    tiers = AgentTierMap(
        extra={
            "TIER_2_ANALYSIS": {"agents": {"api-reviewer": "agents.code-reviewer"}},
            "tier_3_specialized": {"agents": ["frontend-engineer"]},  # moves an agent
        }
    )
    assert tiers.get_agent_tier("api-reviewer") is AgentTier.TIER_2_ANALYSIS
    assert tiers.get_agent_tier("frontend-engineer") is AgentTier.TIER_3_SPECIALIZED
    assert "frontend-engineer" not in tiers.list_agents_by_tier(AgentTier.TIER_1_DEFAULT)
    assert tiers.tier_info(AgentTier.TIER_2_ANALYSIS).expected_range == (0.70, 0.80)


def test_bad_tier_name_in_config_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="TIER_9"):
        AgentTierMap(extra={"TIER_9": {"agents": ["x"]}})
