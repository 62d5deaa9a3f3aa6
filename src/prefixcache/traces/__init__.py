"""Trace analysis: why requests missed vLLM's prefix cache (``explain``) and what a
workload would hit on a fleet of a given size (``simulate``)."""

from .causes import Cause
from .explain import Break, ExplainReport, explain
from .simulate import BlockPool, Policy, SimReport, SimRequest, Simulator, simulate
from .tokenize import LocalTokenizer, ServerTokenizer, TokenizerError, tokenize_trace

__all__ = [
    "BlockPool",
    "Break",
    "Cause",
    "ExplainReport",
    "LocalTokenizer",
    "Policy",
    "ServerTokenizer",
    "SimReport",
    "SimRequest",
    "Simulator",
    "TokenizerError",
    "explain",
    "simulate",
    "tokenize_trace",
]
