"""The benchmark's workloads: realistic agent tasks, the guide's five scenarios, and the
arms they are run with, as typed objects.

Pure data: a scenario is a list of ``Step``s (who does what, with which dynamic inputs).
How a step becomes a request depends on the arm's layout (see ``runner.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..prompts.inputs import PromptInputs
from ..prompts.sizes import DEFAULT_TOOLS, TOOLS


class Layout(StrEnum):
    """How an arm lays a step out as chat messages."""

    #: ``compose_prompt``: static prefix, then the dynamic suffix.
    OPTIMIZED = "optimized"
    #: the dynamic suffix first, then the static prompt (a common layout).
    DYNAMIC_FIRST = "dynamic-first"
    #: multi-turn: the guide's "last 3 exchanges" inside the system prompt.
    HISTORY_IN_SYSTEM = "history-in-system"
    #: multi-turn: the system prompt stays fixed; turns are appended as messages.
    APPEND_ONLY = "append-only"
    #: the guide's reference implementation (see ``prompts/reference.py``).
    REFERENCE = "reference"
    #: through a real ``prefixcache serve`` over HTTP: the service builds the prompt
    #: (``bench/service.py``)
    SERVICE = "service"


@dataclass(frozen=True)
class Arm:
    """One way of sending a scenario's steps: a layout, and what the cache may reuse."""

    name: str
    layout: Layout
    description: str
    #: a unique cache_salt per request: nothing can be reused (the baseline)
    unique_salt: bool = False
    #: each distinct agent's static prefix is prefilled once (max_tokens=1) before task 1
    warm: bool = False
    #: static layers padded to the engine's block boundaries (``layout/alignment.py``):
    #: "auto" (the agent's own layer when that pays) or "always" (every layer)
    aligned: str = ""
    #: the next step's agent prefix is prefetched in the background after each step
    prefetch: bool = False

    @property
    def via_service(self) -> bool:
        return self.layout is Layout.SERVICE

    @property
    def reuses(self) -> bool:
        """False for the arms whose requests can reuse nothing (a unique salt, or the
        dynamic text first): they run on their own, not interleaved."""
        return not self.unique_salt and self.layout is not Layout.DYNAMIC_FIRST


NO_REUSE = Arm(
    "no-reuse",
    Layout.OPTIMIZED,
    "optimized layout, unique cache_salt per request",
    unique_salt=True,
)
NAIVE = Arm("naive", Layout.DYNAMIC_FIRST, "dynamic context before the static prompt")
REFERENCE = Arm("reference", Layout.REFERENCE, "the guide's reference implementation's layout")
OPTIMIZED = Arm("optimized", Layout.OPTIMIZED, "compose_prompt: static prefix + dynamic suffix")
ALIGNED = Arm("aligned", Layout.OPTIMIZED, "optimized, layers padded to block ends", aligned="auto")
PREFETCH = Arm(
    "prefetch",
    Layout.OPTIMIZED,
    "every layer aligned, next step's prefix prefetched",
    aligned="always",
    prefetch=True,
)
WARMED = Arm("warmed", Layout.OPTIMIZED, "optimized, agents' prefixes warmed first", warm=True)
SERVICE = Arm(
    "service",
    Layout.SERVICE,
    "prefixcache serve as shipped, over HTTP (/chat streamed; the workflow by /tasks)",
)
MT_NO_REUSE = Arm(
    "no-reuse", Layout.APPEND_ONLY, "append-only, unique cache_salt per request", unique_salt=True
)
GUIDE_LAYOUT = Arm(
    "guide-layout", Layout.HISTORY_IN_SYSTEM, "the guide's last 3 exchanges in the system prompt"
)
APPEND_ONLY = Arm("append-only", Layout.APPEND_ONLY, "fixed system prompt, turns appended")

#: every arm name, in report order
ARM_NAMES: tuple[str, ...] = (
    "no-reuse",
    "naive",
    "reference",
    "optimized",
    "aligned",
    "prefetch",
    "warmed",
    "guide-layout",
    "append-only",
    "service",
)
#: what `prefixcache bench` runs when no --arms are given (prefetch needs --tool-time to
#: have idle time to fill, so it is asked for by name)
DEFAULT_ARMS: tuple[str, ...] = tuple(a for a in ARM_NAMES if a != "prefetch")


class Kind(StrEnum):
    SEQUENTIAL = "sequential"  # steps one after another, arms interleaved step by step
    MULTITURN = "multiturn"  # one conversation, arms interleaved turn by turn
    CONCURRENT = "concurrent"  # sessions at once; arms one after another
    APPS = "apps"  # apps nobody rewrote, through the gateway's stabilizer (unmodified.py)


@dataclass(frozen=True)
class Scenario:
    """One of the guide's scenarios: its steps and the arms it is run with."""

    name: str
    title: str
    kind: Kind
    arms: tuple[Arm, ...]
    steps: Callable[[], list[Step]] | None = None

    def arm(self, name: str) -> Arm | None:
        return next((a for a in self.arms if a.name == name), None)

    def select_arms(self, names: Sequence[str]) -> list[Arm]:
        return [a for a in self.arms if a.name in names]


@dataclass(frozen=True)
class Step:
    """One task for one agent, with the dynamic inputs of its prompt."""

    agent_type: str
    task: str
    session_id: str
    user_name: str = "Alice"
    user_role: str = "developer"
    recent_context: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def tools(self) -> tuple[str, ...]:
        return TOOLS.get(self.agent_type, DEFAULT_TOOLS)

    def for_pass(self, number: int) -> Step:
        """The same task as another day's traffic: same agent, another user and session."""
        if number <= 1:
            return self
        user = (
            USERS[(USERS.index(self.user_name) + number - 1) % len(USERS)]
            if self.user_name in USERS
            else self.user_name
        )
        return Step(
            agent_type=self.agent_type,
            task=self.task,
            session_id=f"{self.session_id}-day{number}",
            user_name=user,
            user_role=self.user_role,
            recent_context=self.recent_context,
            params=self.params,
        )

    def prompt_inputs(self) -> PromptInputs:
        return PromptInputs(
            session_id=self.session_id,
            user_name=self.user_name,
            user_role=self.user_role,
            available_tools=self.tools,
            recent_context=self.recent_context,
            additional_params=self.params,
        )


FRONTEND_TASKS = (
    "Add client-side validation to the signup form: email format, password of at least 12 characters, and matching confirmation.",
    "The dashboard table re-renders on every keystroke in the search box. Debounce the search input and memoise the filtered rows.",
    "Replace the hard-coded colours in the settings page with the design system's CSS variables.",
    "Add a loading skeleton to the project list while the API request is pending, and an error state with a retry button.",
    "Make the navigation menu keyboard accessible: focus order, visible focus ring, Escape closes the submenu.",
    "The date picker shows the wrong month for users in UTC-8. Find the cause and fix it.",
    "Split the 900-line OrderForm component into smaller components without changing its behaviour.",
    "Add a dark mode toggle that respects the operating system preference and remembers the user's choice.",
    "Write component tests for the pagination control: first, last, next, previous and direct page input.",
    "Lazy-load the charts library so that the initial bundle shrinks; report the bundle size before and after.",
)

MIXED_TASKS = (
    (
        "frontend-engineer",
        "Show a toast when saving the profile fails, with the server's error message.",
    ),
    (
        "backend-engineer",
        "Add an endpoint that returns a user's last 20 orders, paginated, with typed response models.",
    ),
    (
        "database-engineer",
        "The orders query by customer and date is slow on 40 million rows. Propose and write the index migration.",
    ),
    (
        "testing-engineer",
        "Write integration tests for the password reset flow, including an expired token.",
    ),
    (
        "documentation-engineer",
        "Document the new orders endpoint: parameters, response, errors and an example request.",
    ),
    ("frontend-engineer", "Add sorting by date and by amount to the orders table."),
    (
        "backend-engineer",
        "Make the payment webhook handler idempotent so that retries do not double-charge.",
    ),
    (
        "database-engineer",
        "Write a migration that splits the address column into street, city and postal code without downtime.",
    ),
    (
        "testing-engineer",
        "The checkout test is flaky on CI. Find the race and make the test deterministic.",
    ),
    (
        "documentation-engineer",
        "Update the README's setup section for the new environment variables.",
    ),
)

WORKFLOW_STEPS = (
    (
        "orchestrator",
        "Plan the work for: users can export their order history as CSV. List tasks, agents and order.",
    ),
    (
        "project-task-planner",
        "Break the CSV export feature into tasks with acceptance criteria and estimates.",
    ),
    (
        "prd-writer",
        "Write the requirements for the CSV export: columns, limits, formats and success metrics.",
    ),
    (
        "systems-architect",
        "Design the export: synchronous download or background job with a link? Compare and recommend.",
    ),
    (
        "database-engineer",
        "Write the query that streams a user's orders in date order without loading them all into memory.",
    ),
    (
        "backend-engineer",
        "Implement the export endpoint that streams CSV rows with the right headers.",
    ),
    (
        "senior-backend-engineer",
        "Review the streaming design for back-pressure and client disconnects.",
    ),
    (
        "frontend-engineer",
        "Add an Export CSV button to the orders page with progress and error states.",
    ),
    (
        "frontend-designer",
        "Specify the export button's placement, states and accessibility labels.",
    ),
    (
        "testing-engineer",
        "Write tests for the export: empty history, 100,000 orders, special characters in fields.",
    ),
    ("code-reviewer", "Review the export endpoint change for correctness and style."),
    (
        "security-auditor",
        "Audit the export for CSV injection and for access to other users' orders.",
    ),
    (
        "performance-engineer",
        "Measure memory and time of an export of 100,000 orders and report the figures.",
    ),
    (
        "code-refactorer",
        "Extract the CSV writing into a reusable helper without changing behaviour.",
    ),
    (
        "code-skeptic",
        "Challenge the claim that the export is safe under concurrent requests. What evidence is missing?",
    ),
    (
        "devops-engineer",
        "Add a CI job that runs the export tests and a size-limited export smoke test.",
    ),
    ("documentation-engineer", "Document the export feature for users and for API clients."),
    ("content-writer", "Write the release note announcing CSV export."),
    (
        "memory-monitor",
        "Check which conversation data from this workflow should be kept, summarised or dropped.",
    ),
    (
        "orchestrator",
        "Summarise the delivered work, the measured results and the open decisions for the product owner.",
    ),
)

MULTITURN_TURNS = (
    "I want to add a search box to the products page. Where should it go in the component tree?",
    "Good. Now write the search input component with a debounce of 300 ms.",
    "How should it pass the query to the product list? We use a store for filters.",
    "Add the filter to the store and connect the list to it.",
    "The list flickers while typing. Why, and how do we fix it?",
    "Write a test that types a query and checks the filtered results.",
    "The test is slow because it waits for the debounce. Can we use fake timers?",
    "Summarise what we changed in this session for the pull request description.",
)

CONCURRENT_AGENTS = (
    "frontend-engineer",
    "backend-engineer",
    "database-engineer",
    "testing-engineer",
    "documentation-engineer",
    "devops-engineer",
    "code-reviewer",
    "security-auditor",
)

USERS = ("Alice", "Bob", "Chen", "Dana", "Emeka", "Farah", "Goran", "Hana")


def _step(index: int, agent: str, task: str, session: str, previous: str | None) -> Step:
    return Step(
        agent_type=agent,
        task=task,
        session_id=f"{session}-{index + 1:02d}",
        user_name=USERS[index % len(USERS)],
        recent_context=f"Previous task: {previous}" if previous else None,
        params={"task_priority": ("high", "normal", "low")[index % 3], "task_number": index + 1},
    )


def _chain(pairs: Sequence[tuple[str, str]], session: str) -> list[Step]:
    """Steps in order, each carrying the previous task as its recent context."""
    steps: list[Step] = []
    previous: str | None = None
    for i, (agent, task) in enumerate(pairs):
        steps.append(_step(i, agent, task, session, previous))
        previous = task
    return steps


def single_steps() -> list[Step]:
    return _chain([("frontend-engineer", task) for task in FRONTEND_TASKS], "single")


def mixed_steps() -> list[Step]:
    return _chain(MIXED_TASKS, "mixed")


def workflow_steps() -> list[Step]:
    return _chain(WORKFLOW_STEPS, "workflow")


def concurrent_steps(sessions: int, requests_per_session: int) -> list[list[Step]]:
    """One list of steps per session; sessions differ in agent, user and tasks."""
    out: list[list[Step]] = []
    for s in range(sessions):
        agent = CONCURRENT_AGENTS[s % len(CONCURRENT_AGENTS)]
        tasks = [t for a, t in MIXED_TASKS + WORKFLOW_STEPS if a == agent] or list(FRONTEND_TASKS)
        session: list[Step] = []
        for r in range(requests_per_session):
            session.append(
                Step(
                    agent_type=agent,
                    task=tasks[r % len(tasks)],
                    session_id=f"concurrent-{s:02d}",
                    user_name=USERS[s % len(USERS)],
                    params={"request_number": r + 1},
                )
            )
        out.append(session)
    return out


SEQUENTIAL_ARMS = (NO_REUSE, NAIVE, REFERENCE, OPTIMIZED, ALIGNED, PREFETCH, WARMED, SERVICE)

SCENARIO_LIST: tuple[Scenario, ...] = (
    Scenario(
        "single",
        "1. One agent type, 10 tasks (frontend-engineer)",
        Kind.SEQUENTIAL,
        SEQUENTIAL_ARMS,
        single_steps,
    ),
    Scenario(
        "mixed",
        "2. Mixed agent types of one tier, 10 tasks",
        Kind.SEQUENTIAL,
        SEQUENTIAL_ARMS,
        mixed_steps,
    ),
    Scenario(
        "workflow",
        "3. Multi-agent workflow, 20 steps across all four tiers",
        Kind.SEQUENTIAL,
        SEQUENTIAL_ARMS,
        workflow_steps,
    ),
    Scenario(
        "multiturn",
        "4. Multi-turn session, one agent, 8 turns",
        Kind.MULTITURN,
        (MT_NO_REUSE, GUIDE_LAYOUT, APPEND_ONLY, SERVICE),
    ),
    Scenario(
        "concurrent",
        "5. Concurrent load",
        Kind.CONCURRENT,
        (NO_REUSE, REFERENCE, OPTIMIZED, WARMED, SERVICE),
    ),
    Scenario(
        "unmodified-apps",
        "6. Apps nobody rewrote, through the gateway's stabilizer",
        Kind.APPS,
        (),
    ),
)
SCENARIOS: dict[str, Scenario] = {s.name: s for s in SCENARIO_LIST}
SCENARIO_TITLES: dict[str, str] = {s.name: s.title for s in SCENARIO_LIST}
