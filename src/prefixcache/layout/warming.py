"""Warming and prefetch: prefill agents' static prefixes before their requests need them.

``warm_prefixes`` prefills each agent's static prefix once (a ``max_tokens=1`` request whose
system prompt is the prefix and the fixed suffix header), awaited: at engine start, or
before a workflow. ``Prefetcher.prefetch(agent_types)`` does the same in the background
and returns at once: when the next steps' agents are known (a workflow plan, a task
queue), their prefixes are computed while the current step's tools run, so the next
request finds its prefix cached. Both use the cache salt of the requests they prepare
(a prefix prefilled under another salt is never reused).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from ..llm.interface import LLMInterface
from ..llm.models import LLMResponse, Message
from ..prompts.library import PromptLibrary

WARM_USER_MESSAGE = "Ready."


def warm_messages(library: PromptLibrary, agent_type: str) -> list[Message]:
    """The agent's static prefix and the fixed suffix header, nothing dynamic."""
    prompt = library.compose_prompt(agent_type=agent_type)
    return [
        {"role": "system", "content": prompt.text},
        {"role": "user", "content": WARM_USER_MESSAGE},
    ]


async def warm_prefixes(
    llm: LLMInterface,
    library: PromptLibrary,
    agent_types: Iterable[str],
    *,
    cache_salt: str | None = None,
) -> list[LLMResponse]:
    """Prefill each distinct agent's prefix once, one after another."""
    responses = []
    for agent in dict.fromkeys(agent_types):
        response = await llm.chat_completion(
            warm_messages(library, agent), max_tokens=1, cache_salt=cache_salt, agent_type=agent
        )
        responses.append(response)
    return responses


class Prefetcher:
    """Background prefills of the prefixes the next steps will need.

    ``prefetch`` starts a ``max_tokens=1`` request per agent whose prefix is not
    already prefetched or in flight (by prefix hash), and returns the tasks at once;
    ``drain`` waits for all of them. A failed prefetch is only a missed optimisation:
    its error is kept in ``errors``, never raised into the caller's flow.
    """

    def __init__(
        self, llm: LLMInterface, library: PromptLibrary, *, cache_salt: str | None = None
    ) -> None:
        self.llm = llm
        self.library = library
        self.cache_salt = cache_salt
        self.done: dict[str, LLMResponse] = {}  # prefix hash -> the prefill's response
        self.agent_of: dict[str, str] = {}  # prefix hash -> the agent it was for
        self.errors: list[BaseException] = []
        self._inflight: dict[str, asyncio.Task[None]] = {}

    def prefetch(self, agent_types: Iterable[str]) -> list[asyncio.Task[None]]:
        tasks = []
        for agent in dict.fromkeys(agent_types):
            digest = self.library.compose_prompt(agent_type=agent).prefix_hash
            if digest in self.done or digest in self._inflight:
                continue
            self.agent_of[digest] = agent
            task = asyncio.create_task(self._one(agent, digest))
            self._inflight[digest] = task
            tasks.append(task)
        return tasks

    async def _one(self, agent: str, digest: str) -> None:
        try:
            response = await self.llm.chat_completion(
                warm_messages(self.library, agent),
                max_tokens=1,
                cache_salt=self.cache_salt,
                agent_type=agent,
            )
        except Exception as exc:  # a missed optimisation, not the caller's failure
            self.errors.append(exc)
        else:
            self.done[digest] = response
        finally:
            self._inflight.pop(digest, None)

    def mark_done(self, agent_type: str, response: LLMResponse) -> None:
        """Record that a real request already prefilled this agent's prefix."""
        digest = self.library.compose_prompt(agent_type=agent_type).prefix_hash
        self.agent_of.setdefault(digest, agent_type)
        self.done.setdefault(digest, response)

    @property
    def pending(self) -> int:
        return len(self._inflight)

    async def drain(self) -> None:
        """Wait for every prefetch in flight."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight.values()), return_exceptions=True)
