"""Diagnostics against a live server: token-exact analysis, the chat-template check and
``doctor``."""

from .chat_template import (
    TEMPLATE_FIX,
    TemplateFinding,
    chat_template_preamble,
    volatile_text_problems,
)
from .doctor import Check, run_checks
from .tokens import TokenAnalysis, analyze_tokens, measure

__all__ = [
    "TEMPLATE_FIX",
    "Check",
    "TemplateFinding",
    "TokenAnalysis",
    "analyze_tokens",
    "chat_template_preamble",
    "measure",
    "run_checks",
    "volatile_text_problems",
]
