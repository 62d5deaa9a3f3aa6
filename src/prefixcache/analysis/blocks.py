"""Block hashes as vLLM's automatic prefix cache computes them, in kind.

vLLM hashes a prompt in full blocks of ``block_size`` tokens; each block's hash covers
its parent's hash and its own token ids, and the first block's parent is seeded with the
request's ``cache_salt``. Equal hashes mean equal prefixes, so looking a block's hash up
answers "has any earlier request had these exact leading tokens?" in O(1), and a whole
trace is indexed in time linear in its tokens.

The values here are Python hashes of tuples (stable within one process), not vLLM's
SHA-256 bytes: only equality matters, and 64-bit hashes over a trace's blocks collide
with a probability far below one in a million.
"""

from __future__ import annotations

from collections.abc import Sequence


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
