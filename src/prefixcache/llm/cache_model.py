"""The cache model: what vLLM's automatic prefix cache can reuse of a prompt, in tokens.

vLLM hashes a prompt in full blocks of ``block_size`` tokens, each hash chained to the
previous one (and to the request's ``cache_salt``); only full blocks are shared, and the
last prompt token is always recomputed so that the model has logits to sample from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def common_prefix_len(a: Sequence[T], b: Sequence[T]) -> int:
    """How many leading items (tokens, or characters) ``a`` and ``b`` have in common."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def predicted_cached_tokens(prompt_tokens: int, shared_tokens: int, block_size: int) -> int:
    """What vLLM can reuse: full blocks only, never the last prompt token, never past the
    first differing token: ``min(floor(shared/B)*B, floor((prompt_tokens-1)/B)*B)``."""
    if prompt_tokens <= 0 or block_size <= 0:
        return 0
    return min(
        (shared_tokens // block_size) * block_size,
        ((prompt_tokens - 1) // block_size) * block_size,
    )
