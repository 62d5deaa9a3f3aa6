"""The gateway's stabilizer: learn which lines of a tenant's system prompts change between
requests, and (mode ``on``) move them after the lines that do not; in ``shadow`` only
measure what that would gain. The learning and the rewrite are ``traces/stabilize.py``;
here: the per-tenant mode, the header, and the predictions.

Predictions: after the response, both versions of the request (as the caller wrote it,
and as stabilized) are tokenized by the engine (``/tokenize``, chat template applied)
and looked up in two models of the tenant's prefix cache, one per version, each filled
as vLLM fills its cache (full blocks, chained hashes, never the last token's block;
bounded, least recently used dropped). The cached tokens each would get are kept on the
request's record: ``/stats``, ``/dashboard`` and ``explain`` show them per family before
anyone switches ``on``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from ..layout.cache_model import block_hashes, max_cacheable_blocks
from ..llm.inspector import parse_engine_metrics, workers_in
from ..llm.models import Message
from ..traces.stabilize import CHARS_PER_TOKEN, Mode, Rewrite, Stabilizer, allowed_mode
from .auth import Principal

logger = logging.getLogger("prefixcache.service")

#: the header a request may lower its tenant's mode with
STABILIZE_HEADER = "x-prefixcache-stabilize"
#: on a rewritten response: what moved
STABILIZED_HEADER = "X-Prefixcache-Stabilized"
#: blocks each cache model keeps (both versions, all tenants together)
MODEL_BLOCKS = 262_144


@dataclass(frozen=True)
class Stabilized:
    """What the stabilizer did (or would do) with one gateway request."""

    mode: Mode
    rewrite: Rewrite
    original: list[Message]
    original_tools: list[Any] | None

    @property
    def applied(self) -> bool:
        return self.mode == "on" and self.rewrite.rewritten

    def shapes_json(self) -> str | None:
        plan = self.rewrite.plan
        if plan is None or not plan.changes_anything:
            return None
        return json.dumps(list(plan.shapes[:20]), ensure_ascii=False)


class CacheModel:
    """One version's prefix cache, as vLLM fills it (per tenant by salt; bounded)."""

    def __init__(self, block_size: int, max_blocks: int = MODEL_BLOCKS) -> None:
        self.block_size = block_size
        self.max_blocks = max_blocks
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def request(self, tokens: Sequence[int], salt: str | None) -> int:
        """The cached tokens this request would get; then its blocks are cached."""
        hashes = block_hashes(tokens, self.block_size, salt)
        hit = 0
        while hit < len(hashes) and hashes[hit] in self._blocks:
            hit += 1
        for h in hashes:
            self._blocks[h] = None
            self._blocks.move_to_end(h)
        while len(self._blocks) > self.max_blocks:
            self._blocks.popitem(last=False)
        return min(hit, max_cacheable_blocks(len(tokens), self.block_size)) * self.block_size


class GatewayStabilizer:
    """Per service: the learned families, and the two cache models."""

    def __init__(self, settings: Any, http: httpx.AsyncClient, vllm_url: str, model: str) -> None:
        self.settings = settings  # StabilizeSettings
        self.http = http
        self.vllm_url = vllm_url
        self.model = model
        self.learner = Stabilizer(history=settings.history, max_families=settings.max_families)
        self.block_size: int | None = None
        self._retry_at = 0.0
        self._engine_url = vllm_url
        self.original: CacheModel | None = None
        self.stabilized: CacheModel | None = None

    def mode_for(self, principal: Principal, header: str | None) -> Mode:
        return allowed_mode(self.settings.mode_for(principal.tenant), header)

    def apply(
        self, principal: Principal, body: dict[str, Any], header: str | None, agent: str | None
    ) -> tuple[dict[str, Any], Stabilized | None]:
        """The body to send upstream (rewritten only in ``on``), and what was learned."""
        mode = self.mode_for(principal, header)
        messages = body.get("messages")
        if mode == "off" or not isinstance(messages, list) or not messages:
            return body, None
        tools = body.get("tools") if isinstance(body.get("tools"), list) else None
        rewrite = self.learner.process(principal.tenant, messages, tools, agent)
        note = Stabilized(mode, rewrite, list(messages), tools)
        if not note.applied:
            return body, note
        out = dict(body)
        out["messages"] = rewrite.messages
        if tools is not None:
            out["tools"] = rewrite.tools
        return out, note

    # -- predictions (after the response) ---------------------------------------------------
    async def _block_size(self) -> int | None:
        """The engine's KV block size, from its ``/metrics`` (behind a router, from the
        first worker it lists); not asked again for a minute after a failure."""
        if self.block_size is None and time.monotonic() >= self._retry_at:
            self._retry_at = time.monotonic() + 60
            size = None
            for url in await self._engines():
                try:
                    text = (await self.http.get(f"{url}/metrics", timeout=10)).text
                except httpx.HTTPError:
                    continue
                size = parse_engine_metrics(text).block_size
                if size:
                    self._engine_url = url  # /tokenize there too (a router may not route it)
                    break
            if size:
                self.block_size = size
                # a rewrite must gain at least one of this engine's blocks
                self.learner.min_gain_chars = size * CHARS_PER_TOKEN
                self.original = CacheModel(size)
                self.stabilized = CacheModel(size)
        return self.block_size

    async def _engines(self) -> list[str]:
        """The engine, or behind vllm-router the workers it lists (a router's own
        ``/metrics`` is not an engine's)."""
        try:
            answer = await self.http.get(f"{self.vllm_url}/list_workers", timeout=3)
        except httpx.HTTPError:
            return [self.vllm_url]
        return [*workers_in(answer), self.vllm_url]

    async def _tokens(self, messages: Sequence[Message], tools: Sequence[Any] | None) -> list[int]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "add_generation_prompt": True,
        }
        if tools:
            body["tools"] = list(tools)
        answer = await self.http.post(f"{self._engine_url}/tokenize", json=body, timeout=30)
        answer.raise_for_status()
        tokens = answer.json().get("tokens")
        if not isinstance(tokens, list):
            raise ValueError("/tokenize answered without tokens")
        return [int(t) for t in tokens]

    async def predict(self, note: Stabilized, salt: str | None) -> tuple[int | None, int | None]:
        """Cached tokens predicted for the request as written and as stabilized (None
        when the engine could not tokenize: a missed figure, never a failed request)."""
        try:
            if await self._block_size() is None:
                return None, None
            assert self.original is not None and self.stabilized is not None
            rewrite = note.rewrite
            written = await self._tokens(note.original, note.original_tools)
            if rewrite.rewritten:
                stable = await self._tokens(rewrite.messages, rewrite.tools)
            else:
                stable = written
            return self.original.request(written, salt), self.stabilized.request(stable, salt)
        except (httpx.HTTPError, ValueError) as exc:
            logger.info("stabilizer prediction skipped: %s", exc)
            return None, None
