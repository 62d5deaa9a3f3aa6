"""The ``unmodified-apps`` scenario's apps: agent apps written the way apps are written in
the wild, with what changes per request near the top of the system prompt.

Each app builds its requests the way its style does, and a **hand-fixed** version of the
same requests (the volatile lines moved after the static text by hand, lists sorted, line
ends normalised): the ceiling a stabilizer can reach. The static text is this project's
own agent prompt (its first ``STATIC_CHARS`` characters, over 2,000 tokens), after a
first line naming the app, so two apps never share a cached block.

Requests are deterministic (a request number makes the timestamp, the id, the user):
every arm of the benchmark sends the same content.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..llm.models import Message
from ..prompts.library import PromptLibrary

#: characters of static instructions per app (over 2,000 tokens of the embedded model)
STATIC_CHARS = 10_000
USERS = (
    ("Alice Martin", "alice@example.com"),
    ("Bob Chen", "bob@example.com"),
    ("Chiara Rossi", "chiara@example.com"),
    ("Dev Patel", "dev@example.com"),
)
TOOLS = ("search_docs", "read_file", "write_file", "run_tests", "open_ticket")
QUESTIONS = (
    "Summarise the open items for me.",
    "What should I check before the release?",
    "Draft a reply to the customer about the delay.",
    "Which tests cover the export feature?",
    "List the risks of the migration in two lines.",
    "What changed since yesterday?",
    "Give me a checklist for the on-call handover.",
    "Explain the failing build in one paragraph.",
)


def static_text(library: PromptLibrary, agent: str = "code-reviewer") -> str:
    """The first lines of an agent's static prompt, up to ``STATIC_CHARS`` characters."""
    out: list[str] = []
    size = 0
    for line in library.compose_prompt(agent_type=agent).prefix.split("\n"):
        if size >= STATIC_CHARS:
            break
        out.append(line)
        size += len(line) + 1
    return "\n".join(out)


@dataclass(frozen=True)
class AppRequest:
    messages: list[Message]
    tools: list[dict[str, Any]] | None = None


def _tool(name: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name.replace('_', ' ')} for the current project",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    }


def _shuffled(items: Sequence[str], n: int) -> list[str]:
    """A set's order (deterministic per request): what ``list(set(...))`` gives."""
    return sorted(items, key=lambda x: hashlib.sha1(f"{n}:{x}".encode()).hexdigest())


@dataclass(frozen=True)
class UnmodifiedApp:
    """One app: a name (sent as ``X-Agent-Type``), its style, and its requests as written
    and as fixed by hand."""

    name: str
    style: str
    #: request number -> the lines that change per request (written above the static
    #: text; the hand-fixed version has them last)
    volatile: Callable[[int], list[str]]
    multi_turn: bool = False
    crlf: Callable[[int], bool] = field(default=lambda n: False)
    tools_from_set: bool = False
    stable: bool = False

    def request(self, n: int, static: str, fixed: bool = False) -> AppRequest:
        """Request ``n`` (0-based); ``fixed``: the same content, laid out by hand."""
        head = [f"You are the assistant of the {self.name} app."]
        tool_names = _shuffled(TOOLS, n) if self.tools_from_set else list(TOOLS)
        if fixed:
            tool_names = sorted(tool_names)
        tool_lines = ["Tools:", *(f"- {t}" for t in tool_names)]
        volatile = self.volatile(n)
        if fixed:
            lines = [*head, static, *tool_lines, *volatile]
        else:
            lines = [*volatile, *head, *tool_lines, static]
        end = "\r\n" if self.crlf(n) and not fixed else "\n"
        system = end.join(lines)
        messages: list[Message] = [{"role": "system", "content": system}]
        if self.multi_turn:
            for turn in range(n):
                messages.append({"role": "user", "content": QUESTIONS[turn % len(QUESTIONS)]})
                messages.append({"role": "assistant", "content": f"Noted ({turn + 1})."})
        messages.append({"role": "user", "content": QUESTIONS[n % len(QUESTIONS)]})
        tools = [_tool(t) for t in tool_names] if self.tools_from_set else None
        return AppRequest(messages, tools)


def _timestamp(n: int) -> list[str]:
    return [f"Current time: 2026-11-30 14:{3 + n // 60:02d}:{n % 60:02d}"]


def _request_id(n: int) -> list[str]:
    digest = hashlib.sha1(f"req-{n}".encode()).hexdigest()
    return [f"X-Request-ID: {digest[:8]}-{digest[8:12]}-{digest[12:16]}", f"Trace: {digest[16:32]}"]


def _user(n: int) -> list[str]:
    name, email = USERS[n % len(USERS)]
    return [f"You are helping {name} <{email}>."]


def _turn(n: int) -> list[str]:
    return [f"This is turn {n + 1} of the conversation."]


def _date(n: int) -> list[str]:
    return [f"Date: 2026-11-{1 + n % 28:02d}"]


APPS: tuple[UnmodifiedApp, ...] = (
    UnmodifiedApp("timestamp-first", "the time to the second on the first line", _timestamp),
    UnmodifiedApp("request-id", "a request id and a trace id in header lines", _request_id),
    UnmodifiedApp(
        "user-first",
        "the user's name and e-mail before the policy, multi-turn",
        _user,
        multi_turn=True,
    ),
    UnmodifiedApp(
        "tools-from-set",
        "the tools in a set's order (in the text and the tools list)",
        lambda n: [],
        tools_from_set=True,
    ),
    UnmodifiedApp("turn-counter", "a turn counter at the top, multi-turn", _turn, multi_turn=True),
    UnmodifiedApp(
        "windows-client",
        "CRLF from one client, LF from the other, and the date",
        _date,
        crlf=lambda n: n % 2 == 1,
    ),
    UnmodifiedApp(
        "already-stable", "static text first, nothing volatile", lambda n: [], stable=True
    ),
)
APPS_BY_NAME = {a.name: a for a in APPS}
