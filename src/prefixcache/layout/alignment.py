"""Block alignment: pad each static layer so that it ends on a KV block boundary of the
serving engine.

vLLM reuses full blocks only. When two agents share the base prompt but the base ends in
the middle of a block, that last partial block is prefilled again at every agent switch
(on average half a block: 64 tokens at vLLM's CPU block size of 128). Padding the base
(and each tier block, and the end of the static prefix) to a block boundary makes an
agent switch prefill only the agent's own blocks, and a repeat of the same agent only its
dynamic suffix.

Token counts come from the engine's own ``/tokenize`` (chat template applied), the block
size from its ``/metrics``; the result is computed once per engine, model, block size and
prompt set, and cached in this process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from ..llm.inspector import EngineInspector
from ..prompts.compose import LayerChain, PromptComposer, pad_text
from .cache_model import common_prefix_len

_CACHE: dict[tuple[str, str, int, str], dict[LayerChain, int]] = {}
_LOCK = threading.Lock()
_PROBES = ("Alpha", "Zulu")


class BlockAligner:
    """Computes the padding units of every layer chain of some agents."""

    def __init__(self, inspector: EngineInspector, block_size: int) -> None:
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.inspector = inspector
        self.block_size = block_size
        self.unaligned: list[LayerChain] = []

    def boundary(self, text: str, join: str) -> int:
        """Tokens two prompts share when they agree up to ``text + join`` and then differ."""
        # a probe led by a space cannot merge into the join's last word
        probes = _PROBES if join[-1:].isspace() else tuple(" " + p for p in _PROBES)
        a, b = (
            self.inspector.tokenize_messages(
                [
                    {"role": "system", "content": text + join + probe},
                    {"role": "user", "content": "x"},
                ]
            )
            for probe in probes
        )
        return common_prefix_len(a, b)

    def units_for(
        self, composer: PromptComposer, chain: LayerChain, join: str, *, at_most: int | None = None
    ) -> int:
        """Padding units that put the end of ``chain`` on a block boundary (0: already
        there, none fits, or the padding would take more than ``at_most`` tokens)."""
        base = composer.chain_text(chain)
        start = self.boundary(base, join)
        if start % self.block_size == 0:
            return 0
        one = self.boundary(base + pad_text(1), join)
        unit = self.boundary(base + pad_text(2), join) - one  # tokens per pad unit
        frame = one - start - unit  # tokens of the padding's fixed part
        if unit <= 0:
            self.unaligned.append(chain)
            return 0
        units = next(
            (
                k
                for k in range(1, 2 * self.block_size + 1)
                if (start + frame + k * unit) % self.block_size == 0
            ),
            None,
        )
        if units is None:
            self.unaligned.append(chain)
            return 0
        if at_most is not None and frame + units * unit > at_most:
            return 0
        for _ in range(4):  # tokenizers may merge at the edges: correct and check again
            got = self.boundary(base + pad_text(units), join)
            error = (-got) % self.block_size
            if error == 0:
                return units
            units += max(1, error // unit)
        self.unaligned.append(chain)
        return 0

    def padding(
        self, composer: PromptComposer, agent_types: Iterable[str], *, own_layer: str = "auto"
    ) -> dict[LayerChain, int]:
        """Padding for every layer chain of ``agent_types``, outer layers first (an inner
        layer's boundary depends on the outer layers' padding).

        Shared layers (the base, a tier block) are always padded: every agent after the
        first gains. The agent's own last layer (``own_layer="auto"``) is padded only when
        the padding is shorter than the partial block it saves (under half a block):
        padding there costs once per agent switch and saves the partial block at every
        repeat, so it pays from the first repeat on exactly then. ``own_layer="always"``
        pads it whatever the length: right when the prefix is prefilled ahead of time
        (prefetch, warming), where the padding costs nothing on the request's path."""
        chains: dict[LayerChain, tuple[str, bool]] = {}
        for agent in agent_types:
            layers = composer.layer_chains(agent)
            for n, (chain, join) in enumerate(layers):
                last = n == len(layers) - 1 and len(layers) > 1
                chains.setdefault(chain, (join, last))
        result: dict[LayerChain, int] = {}
        for chain in sorted(chains, key=len):
            composer.set_padding(result)
            join, last = chains[chain]
            limit = (self.block_size - 1) // 2 if last and own_layer == "auto" else None
            result[chain] = self.units_for(composer, chain, join, at_most=limit)
        composer.set_padding(result)
        return result


def align_to_blocks(
    composer: PromptComposer,
    inspector: EngineInspector,
    block_size: int,
    agent_types: Iterable[str],
    *,
    own_layer: str = "auto",
) -> dict[LayerChain, int]:
    """Pad ``composer``'s layers to ``block_size`` for these agents (cached per engine);
    ``own_layer``: see ``BlockAligner.padding``."""
    agents = sorted(set(agent_types))
    composer.set_padding({})  # the key is the unpadded prompts
    prompts_id = "|".join(
        f"{a}:{composer.prefix(composer.tiers.get_base_prompt_for_agent(a), a)[1][:16]}"
        for a in agents
    )
    key = (inspector.base_url, inspector.model, block_size, f"{own_layer}|{prompts_id}")
    with _LOCK:
        cached = _CACHE.get(key)
    if cached is None:
        cached = BlockAligner(inspector, block_size).padding(composer, agents, own_layer=own_layer)
        with _LOCK:
            _CACHE[key] = cached
    composer.set_padding(cached)
    return dict(cached)
