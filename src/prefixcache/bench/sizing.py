"""A benchmark sized to this machine: how many tasks and apps fit in a time, from the
engine's measured speed (``engine/calibration.py``) and the prompts' exact token counts
(the server's own ``/tokenize``).

Machines of this kind differ about eight times in prefill speed, so `make demo` does not
send a fixed volume: it asks for ``--fit-minutes`` and runs the largest plan whose
estimate fits, printing what it will run and for about how long before it starts. The
estimate is a model of the work, not a measurement: each request costs its uncached
tokens at the measured prefill rate, plus a cached request's fixed time, plus its decode
steps. The report then shows the measured times beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..engine.calibration import Calibration
from ..llm.inspector import EngineInspector
from ..prompts.library import PromptLibrary
from ..prompts.sizes import TYPICAL_CALL
from ..prompts.tiers import AgentTier
from .apps import APPS, UnmodifiedApp
from .runner import BenchSettings
from .scenarios import Arm, Step
from .unmodified import ARMS as APP_ARMS

#: uncached tokens of a request whose static prefix is cached: its dynamic suffix, the
#: user's message and, on average, half a KV block recomputed
SUFFIX_TOKENS = 230
#: the apps' output tokens (`unmodified.run_apps`)
APP_MAX_TOKENS = 8
#: the plans tried, largest first: (tasks per sequential scenario, apps, requests per app)
LEVELS: tuple[tuple[int, int, int], ...] = (
    (10, 7, 6),
    (8, 7, 5),
    (6, 7, 4),
    (5, 5, 4),
    (4, 4, 4),
    (3, 4, 3),
    (3, 3, 3),
    (2, 3, 3),
)


@dataclass(frozen=True)
class PromptTokens:
    """Exact token counts of the prompts the plan sends (from the server's tokenizer)."""

    #: agent -> tokens of its whole prompt (optimized layout, a typical suffix)
    prompt: dict[str, int]
    #: agent -> tokens of its static prefix
    prefix: dict[str, int]
    #: the base prompt every agent of tiers 1-3 shares
    base: int
    #: an unmodified app's prompt (its static text and its changing lines)
    app: int


@dataclass(frozen=True)
class Plan:
    tasks: int
    apps: int
    app_requests: int
    #: estimated seconds, per part ("single", "mixed", "workflow", "unmodified-apps")
    parts: dict[str, float]

    @property
    def seconds(self) -> float:
        return sum(self.parts.values())

    def describe(self) -> str:
        parts = ", ".join(f"{name} {s / 60:.1f}" for name, s in self.parts.items())
        return (
            f"{self.tasks} tasks per scenario (the guide has 10, 10 and 20), "
            f"{self.apps} apps x {self.app_requests} requests: about "
            f"{self.seconds / 60:.1f} min ({parts} min)"
        )


def _sequential_s(
    steps: Sequence[Step],
    arms: Sequence[Arm],
    passes: int,
    max_tokens: int,
    tokens: PromptTokens,
    speed: Calibration,
) -> float:
    total = 0.0
    for arm in arms:
        uncached = 0.0
        requests = len(steps) * passes
        if arm.name == "no-reuse":
            uncached = passes * sum(tokens.prompt[s.agent_type] for s in steps)
        else:
            seen: set[str] = set()
            for step in steps:
                if arm.name == "service":
                    uncached += SUFFIX_TOKENS
                elif not seen:
                    uncached += tokens.prompt[step.agent_type]
                elif step.agent_type not in seen and arm.name != "reference":
                    uncached += tokens.prefix[step.agent_type] - tokens.base + SUFFIX_TOKENS
                else:
                    uncached += SUFFIX_TOKENS
                seen.add(step.agent_type)
            uncached += (passes - 1) * len(steps) * SUFFIX_TOKENS
            if arm.name == "service":  # a fresh service warms every agent at start
                uncached += tokens.base + sum(p - tokens.base for p in tokens.prefix.values())
                total += len(tokens.prefix) * speed.request_s(0, 1)  # max_tokens=1 prefills
        total += speed.prefill_s(uncached) + requests * speed.request_s(0, max_tokens)
    return total


def _apps_s(
    apps: Sequence[UnmodifiedApp], requests: int, tokens: PromptTokens, speed: Calibration
) -> float:
    uncached = 0.0
    for app in apps:
        for arm in APP_ARMS:
            reused = app.name == "already-stable" or arm in ("on", "hand-fixed")
            if reused:  # cold once, the stabilizer learns from the first two
                learning = 1 if app.name == "already-stable" or arm == "hand-fixed" else 2
                uncached += learning * tokens.app + (requests - learning) * SUFFIX_TOKENS
            else:
                uncached += requests * tokens.app
    count = len(apps) * len(APP_ARMS) * requests
    return speed.prefill_s(uncached) + count * speed.request_s(0, APP_MAX_TOKENS)


def chosen_apps(count: int) -> tuple[UnmodifiedApp, ...]:
    """The first ``count`` apps, always ending with the one that is already stable."""
    broken = [a for a in APPS if a.name != "already-stable"][: max(count - 1, 0)]
    stable = [a for a in APPS if a.name == "already-stable"]
    return (*broken, *stable)


def estimate(
    settings: BenchSettings,
    level: tuple[int, int, int],
    *,
    tokens: PromptTokens,
    speed: Calibration,
) -> Plan:
    """``settings``' scenarios and arms at one of ``LEVELS``, in estimated seconds."""
    tasks, apps, app_requests = level
    sized = replace(settings, tasks=tasks)
    parts: dict[str, float] = {}
    for scenario in settings.scenario_objects():
        if scenario.steps is not None:
            parts[scenario.name] = _sequential_s(
                sized.steps_for(scenario),
                settings.arms_for(scenario),
                settings.passes,
                settings.max_tokens,
                tokens,
                speed,
            )
        elif scenario.name == "unmodified-apps":
            parts[scenario.name] = _apps_s(chosen_apps(apps), app_requests, tokens, speed)
    return Plan(tasks, apps, app_requests, parts)


def fit(
    seconds: float, settings: BenchSettings, *, tokens: PromptTokens, speed: Calibration
) -> tuple[Plan, bool]:
    """The largest plan of ``LEVELS`` whose estimate fits in ``seconds`` (the smallest,
    and False, when none does)."""
    plan = None
    for level in LEVELS:
        plan = estimate(settings, level, tokens=tokens, speed=speed)
        if plan.seconds <= seconds:
            return plan, True
    assert plan is not None
    return plan, False


def measure_tokens(inspector: EngineInspector, library: PromptLibrary, static: str) -> PromptTokens:
    """Every agent's prompt and prefix, the base prompt and one app's prompt, counted by
    the server's own tokenizer (``/tokenize``: no prefill, no generation)."""

    def count(text: str) -> int:
        return len(inspector.tokenize_messages([{"role": "system", "content": text}]))

    prompt: dict[str, int] = {}
    prefix: dict[str, int] = {}
    for agent in library.tiers.agents():
        composed = library.compose(TYPICAL_CALL, agent_type=agent)
        prompt[agent] = count(composed.text) + 20  # and the user's task
        prefix[agent] = count(composed.prefix)
    base_key = library.tiers.tier_info(AgentTier.TIER_1_DEFAULT).base_prompt
    base = count(library.get_prompt(base_key))
    app = len(inspector.tokenize_messages(APPS[0].request(0, static).messages))
    return PromptTokens(prompt, prefix, base, app)
