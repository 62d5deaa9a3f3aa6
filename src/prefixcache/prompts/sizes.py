"""Static/dynamic size analysis of composed prompts (characters; token-exact analysis
against a live server lives in the engine-facing modules)."""

from __future__ import annotations

from dataclasses import dataclass

from .inputs import PromptInputs
from .library import PromptLibrary

#: The dynamic inputs of a typical agent request, used wherever a "typical call" is reported.
TYPICAL_CALL = PromptInputs(
    session_id="session-7f3a",
    user_name="Alice",
    user_role="developer",
    available_tools=["file_read", "file_write", "run_tests"],
    recent_context=[
        {"role": "user", "content": "The login form should remember the email address."},
        {"role": "assistant", "content": "I added a remember-me checkbox and a test for it."},
        {"role": "user", "content": "Now make the error message clearer."},
    ],
    additional_params={"project_name": "AutoBot", "tech_stack": "Vue.js + FastAPI"},
)


#: The tools each agent of the benchmark and the synthetic traces is given.
TOOLS: dict[str, tuple[str, ...]] = {
    "frontend-engineer": ("file_read", "file_write", "npm_run"),
    "backend-engineer": ("file_read", "file_write", "database_query", "run_tests"),
    "senior-backend-engineer": ("file_read", "file_write", "database_query", "run_tests"),
    "database-engineer": ("database_query", "file_read", "explain_plan"),
    "documentation-engineer": ("file_read", "file_write"),
    "testing-engineer": ("file_read", "file_write", "run_tests"),
    "devops-engineer": ("file_read", "file_write", "shell"),
    "project-manager": ("task_board",),
    "code-reviewer": ("file_read", "git_diff"),
    "performance-engineer": ("file_read", "profiler", "run_benchmark"),
    "security-auditor": ("file_read", "vulnerability_scan"),
    "code-refactorer": ("file_read", "file_write", "run_tests"),
    "orchestrator": ("assign_task", "task_board"),
}
DEFAULT_TOOLS = ("file_read", "file_write")


@dataclass(frozen=True)
class PromptSizes:
    """Character sizes of one agent's prompt layers for a typical call."""

    agent_type: str
    tier: str
    base_prompt_key: str
    base: int
    tier_block: int
    role: int
    static: int
    dynamic: int

    @property
    def total(self) -> int:
        return self.static + self.dynamic

    @property
    def static_share(self) -> float:
        return self.static / self.total if self.total else 0.0


def prompt_sizes(library: PromptLibrary, agent_type: str) -> PromptSizes:
    profile = library.tiers.profile(agent_type)
    layers = library.composer.static_layers(profile.base_prompt, agent_type)
    prompt = library.compose(
        TYPICAL_CALL, agent_type=agent_type, base_prompt_key=profile.base_prompt
    )
    return PromptSizes(
        agent_type=profile.agent_type,
        tier=profile.tier.value,
        base_prompt_key=profile.base_prompt,
        base=len(layers.base),
        tier_block=len(layers.tier),
        role=len(layers.role),
        static=len(prompt.prefix),
        dynamic=len(prompt.suffix),
    )
