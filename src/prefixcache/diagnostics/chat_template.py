"""The chat-template check: what the server's chat template writes before the system
prompt, and whether any of it changes over time (a date, a time, an id)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..llm.inspector import EngineInspector
from ..prompts.lint import check_line

SYSTEM_MARKER = "PREFIXCACHE-SYSTEM-MARKER"


@dataclass(frozen=True)
class TemplateFinding:
    preamble: str
    problems: Sequence[str]


def chat_template_preamble(inspector: EngineInspector) -> TemplateFinding:
    """What the chat template puts before the system prompt, and what in it is volatile."""
    tokens = inspector.tokenize_messages(
        [{"role": "system", "content": SYSTEM_MARKER}, {"role": "user", "content": "hi"}],
        add_generation_prompt=False,
    )
    preamble = inspector.detokenize(tokens).split(SYSTEM_MARKER, 1)[0]
    return TemplateFinding(preamble, volatile_text_problems(preamble))


def volatile_text_problems(text: str) -> list[str]:
    """Lint findings that make text change over time (dates, times, ids, "today")."""
    return [
        f"{rule}: {msg}"
        for line in text.splitlines()
        for rule, msg in check_line(line)
        if rule in {"date", "time", "volatile-phrase", "uuid", "hex-id"}
    ]


TEMPLATE_FIX = (
    "The chat template writes volatile text (a date) before the system prompt, so every "
    "day (or request) starts cold. Pin it: pass chat_template_kwargs with a fixed value "
    '(for Llama 3.x: {"date_string": "26 Jul 2024"}) in every request, or serve the model '
    "with --chat-template pointing at a template without the date."
)
