"""The cache model: what vLLM's automatic prefix cache can reuse of a prompt, in tokens.

vLLM hashes a prompt in full blocks of ``block_size`` tokens, each hash chained to the
previous one (and to the request's ``cache_salt``); only full blocks are shared, and the
last prompt token is always recomputed so that the model has logits to sample from.

Block hashes (``block_hashes``) are computed in kind, not byte for byte: the values here
are Python hashes of tuples (stable within one process), not vLLM's SHA-256 bytes. Only
equality matters, and 64-bit hashes over a trace's blocks collide with a probability far
below one in a million. Equal hashes mean equal prefixes, so looking a block's hash up
answers "has any earlier request had these exact leading tokens?" in O(1).
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


def salt_seed(salt: str | None) -> int:
    """The parent hash of a request's first block."""
    return hash(("prefixcache-salt", salt))


def block_hashes(tokens: Sequence[int], block_size: int, salt: str | None = None) -> list[int]:
    """The chained hash of every *full* block of ``tokens`` (a partial tail is never cached)."""
    if block_size <= 0:
        raise ValueError(f"block_size must be > 0 (got {block_size})")
    parent = salt_seed(salt)
    out: list[int] = []
    for start in range(0, len(tokens) - block_size + 1, block_size):
        parent = hash((parent, tuple(tokens[start : start + block_size])))
        out.append(parent)
    return out


def max_cacheable_blocks(prompt_tokens: int, block_size: int) -> int:
    """Blocks vLLM may take from its cache: never the last prompt token's block, because
    that token is always recomputed to get the logits to sample from."""
    return max(0, (prompt_tokens - 1) // block_size)
