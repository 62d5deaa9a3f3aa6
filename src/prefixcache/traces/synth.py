"""Synthetic agent traces: many sessions of the guide's agents, built with the prompt
library, for ``prefixcache simulate`` projections (the "At scale" page) and the explain
benchmark. Nothing here is sent to a server; the requests are what a platform would send.

A session is one user working with one agent for a few turns: the agent's prompt
(``compose_prompt`` with the session's own id, user and tools), the conversation so far
appended as messages, then the new turn. Sessions start staggered and their turns
interleave, as on a busy platform. ``layout="naive"`` puts the dynamic context before the
static prompt, the layout ``prefixcache explain`` should catch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from ..llm.models import Message
from ..prompts.inputs import PromptInputs
from ..prompts.library import PromptLibrary
from ..prompts.sizes import DEFAULT_TOOLS, TOOLS
from .records import TraceRecord

_TASKS = (
    "Review the change to the payment retry logic and list the risks.",
    "Write unit tests for the date parsing helpers.",
    "Explain why the nightly build failed on the docs step and propose a fix.",
    "Add input validation to the signup form.",
    "Plan the migration of the sessions table to the new schema.",
    "Profile the search endpoint and suggest the three biggest wins.",
    "Document the public API of the billing module.",
    "Audit the upload handler for path traversal.",
)


@dataclass(frozen=True)
class SynthSettings:
    sessions: int = 100
    turns: int = 4
    #: words of attached material per user turn (a file, a log, a diff)
    attachment_words: int = 0
    #: words per assistant reply
    reply_words: int = 120
    #: sessions in flight at once (their turns interleave)
    concurrency: int = 16
    layout: Literal["optimized", "naive"] = "optimized"
    agents: tuple[str, ...] = ()
    seed: int = 0


@dataclass
class _Session:
    number: int
    agent: str
    tools: list[str]
    user: str
    turn: int = 0
    history: list[Message] = field(default_factory=list)


def _words(rng: random.Random, vocabulary: Sequence[str], n: int) -> str:
    return " ".join(rng.choice(vocabulary) for _ in range(n))


def synth_trace(library: PromptLibrary, settings: SynthSettings) -> list[TraceRecord]:
    """The requests of ``settings.sessions`` sessions, interleaved, in arrival order."""
    rng = random.Random(settings.seed)
    agents = list(settings.agents or library.tiers.agents())
    vocabulary = sorted(
        {
            w.strip(".,:;()`*#")
            for a in agents[:6]
            for w in library.get_prompt(library.tiers.profile(a).base_prompt).split()
        }
        - {""}
    )
    start = datetime(2026, 11, 27, 9, 0, 0)
    pending = list(range(settings.sessions))
    active: dict[int, _Session] = {}
    out: list[TraceRecord] = []
    clock = 0.0
    while pending or active:
        while pending and len(active) < settings.concurrency:
            number = pending.pop(0)
            agent = rng.choice(agents)
            tools = list(TOOLS.get(agent, DEFAULT_TOOLS))
            rng.shuffle(tools)  # the library sorts them; the naive layout keeps this order
            active[number] = _Session(number, agent, tools, f"user{rng.randrange(10_000)}")
        s = active[rng.choice(sorted(active))]
        clock += rng.uniform(0.05, 0.5)
        now = start + timedelta(seconds=clock)
        agent, history, number = s.agent, s.history, s.number
        turn = rng.choice(_TASKS)
        if settings.attachment_words:
            turn += "\n\n" + _words(rng, vocabulary, settings.attachment_words)
        inputs = PromptInputs(
            session_id=f"s-{number:06d}", user_name=s.user, available_tools=s.tools
        )
        prompt = library.compose(inputs, agent_type=agent)
        if settings.layout == "naive":
            tool_list = ", ".join(s.tools)
            system = (
                f"Time: {now.isoformat(timespec='seconds')}\nSession: s-{number:06d}\n"
                f"Tools: {tool_list}\n\n{prompt.prefix}"
            )
        else:
            system = prompt.text
        messages: list[Message] = [
            {"role": "system", "content": system},
            *history,
            {"role": "user", "content": turn},
        ]
        out.append(
            TraceRecord(
                messages=tuple(messages),
                model="synthetic",
                agent=agent,
                session=f"s-{number:06d}",
                time=clock,
                completion_tokens=max(1, settings.reply_words * 4 // 3),
                labels={"layout": settings.layout},
            )
        )
        history.extend(
            [
                {"role": "user", "content": turn},
                {"role": "assistant", "content": _words(rng, vocabulary, settings.reply_words)},
            ]
        )
        s.turn += 1
        if s.turn >= settings.turns:
            del active[number]
    return out
