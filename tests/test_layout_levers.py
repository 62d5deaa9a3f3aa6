"""The guide's reference layout, block alignment and prefetch, without an engine.

Alignment runs here against a stand-in tokenizer served over ``httpx.MockTransport``
(one token per character, a fixed chat-template preamble): it checks the algorithm; the
live suite checks the real engine's tokenizer and cache.
"""

from __future__ import annotations

import asyncio
import json
import re
import zlib
from datetime import UTC, datetime

import httpx
import pytest

from prefixcache import ClientSettings, EngineInspector, LLMInterface, PromptLibrary
from prefixcache.layout.alignment import BlockAligner, align_to_blocks
from prefixcache.layout.warming import Prefetcher, warm_messages
from prefixcache.prompts.compose import DYNAMIC_HEADER, pad_text
from prefixcache.prompts.inputs import PromptInputs
from prefixcache.prompts.reference import reference_prompt, reference_static

NOW = datetime(2025, 4, 29, 18, 25, 7, tzinfo=UTC)


# -- the reference layout ---------------------------------------------------------------


def test_reference_layout_follows_the_guide(library: PromptLibrary) -> None:
    inputs = PromptInputs(
        session_id="s-1",
        user_name="Bob <admin>",
        available_tools=["zeta", "alpha"],
        recent_context="Previous task: x & y",
        additional_params={"task_priority": "high", "a": 1},
        now=NOW,
    )
    text = reference_prompt(library, "code-reviewer", inputs)
    static = reference_static(library, "code-reviewer")
    assert text.startswith(static + "\n\n")
    # tiers 1-3 share one main prompt, without a role or tier block
    assert static == reference_static(library, "frontend-engineer")
    assert "# Your Role: Code Reviewer" not in text
    dynamic = text[len(static) + 2 :].splitlines()
    session_line = next(i for i, line in enumerate(dynamic) if "Session ID" in line)
    assert dynamic[session_line : session_line + 3] == [
        "- Session ID: s-1",
        "- Date: 2025-04-29",
        "- Time: 18:25:07",
    ]
    assert "- User: Bob &lt;admin&gt;" in dynamic  # HTML autoescaping
    assert "zeta, alpha" in dynamic  # the caller's order
    assert "Previous task: x &amp; y" in dynamic
    assert dynamic[-2:] == ["- task_priority: high", "- a: 1"]  # the caller's order


def test_reference_fallbacks_and_orchestrator(library: PromptLibrary) -> None:
    text = reference_prompt(library, "orchestrator", PromptInputs(now=NOW))
    assert text.startswith(reference_static(library, "orchestrator"))
    assert reference_static(library, "orchestrator") != reference_static(library, "prd-writer")
    assert "All standard tools" in text and "No recent context available" in text
    assert "- User: User" in text and "- Role: Standard User" in text


# -- block alignment against a stand-in tokenizer -----------------------------------------

PREAMBLE = 7  # tokens the stand-in's chat template puts before the system prompt


_WORDS = re.compile(r"\s?\S+|\s+")


def standin_tokens(text: str) -> list[int]:
    """A stand-in tokenizer: one token per word with its leading space, one per run of
    whitespace (as BPE pre-tokenizers split), ids from a stable hash."""
    return [0] * PREAMBLE + [zlib.crc32(w.encode()) for w in _WORDS.findall(text)]


def _tokenize(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    text = "".join(m["content"] for m in body["messages"])
    return httpx.Response(200, json={"tokens": standin_tokens(text)})


@pytest.fixture
def standin_inspector() -> EngineInspector:
    """A stand-in for vLLM's /tokenize (see ``standin_tokens``)."""
    http = httpx.Client(transport=httpx.MockTransport(_tokenize))
    return EngineInspector("http://tokenizer.standin", "m", http=http)


def test_shared_layers_end_on_block_boundaries(
    library: PromptLibrary, standin_inspector: EngineInspector
) -> None:
    block = 64
    padding = align_to_blocks(
        library.composer, standin_inspector, block, ["frontend-engineer", "backend-engineer"]
    )
    base = ("default.agent.system.main",)
    assert padding[base] > 0  # the built-in base prompt does not end on a boundary by luck
    for chain, join in library.composer.layer_chains("frontend-engineer")[:-1]:
        text = library.composer.chain_text(chain) + join
        # the shared prefix of two continuations ends on a block boundary
        boundary = _common(standin_tokens(text + "Alpha"), standin_tokens(text + "Zulu"))
        assert boundary % block == 0, chain
    # the prompt text carries the padding, and prefix + suffix still make the prompt
    prompt = library.compose_prompt(agent_type="backend-engineer", session_id="s")
    assert pad_text(padding[base]) in prompt.prefix
    assert prompt.text == prompt.prefix + prompt.suffix
    assert prompt.suffix.startswith(DYNAMIC_HEADER)


def test_the_agents_own_layer_is_padded_only_when_it_pays(
    library: PromptLibrary, standin_inspector: EngineInspector
) -> None:
    block = 64
    aligner = BlockAligner(standin_inspector, block)
    padding = aligner.padding(library.composer, library.tiers.agents())
    for agent in library.tiers.agents():
        chains = library.composer.layer_chains(agent)
        if len(chains) < 2:
            continue
        chain, join = chains[-1]
        units = padding.get(chain, 0)
        library.composer.set_padding(padding)
        end = aligner.boundary(library.composer.chain_text(chain), join)
        library.composer.set_padding({k: v for k, v in padding.items() if k != chain})
        unpadded = aligner.boundary(library.composer.chain_text(chain), join)
        limit = (block - 1) // 2
        if units:  # padded: aligned, with at most half a block of padding
            assert end % block == 0 and end - unpadded <= limit, agent
        else:  # not padded: aligned already, or the padding would cost too much
            assert unpadded % block == 0 or (-unpadded) % block > limit - 4, agent
    assert aligner.unaligned == []


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


# -- prefetch ---------------------------------------------------------------------------


def _sse(request: httpx.Request) -> httpx.Response:
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 1,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    body = json.loads(request.content)
    if body.get("cache_salt") == "fail":
        return httpx.Response(400, json={"error": {"message": "bad salt"}})
    lines = [
        json.dumps(
            {"id": "c", "choices": [{"delta": {"content": "k"}, "finish_reason": "length"}]}
        ),
        json.dumps({"id": "c", "choices": [], "usage": usage}),
        "[DONE]",
    ]
    return httpx.Response(200, content="".join(f"data: {x}\n\n" for x in lines).encode())


def test_prefetcher_dedups_and_never_raises(library: PromptLibrary) -> None:
    sent: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return _sse(request)

    async def go(salt: str) -> Prefetcher:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            llm = LLMInterface(ClientSettings(base_url="http://x.test"), http=http)
            prefetcher = Prefetcher(llm, library, cache_salt=salt)
            first = prefetcher.prefetch(
                ["frontend-engineer", "backend-engineer", "frontend-engineer"]
            )
            assert len(first) == 2  # one per distinct prefix
            again = prefetcher.prefetch(["backend-engineer"])  # in flight: not sent again
            assert again == []
            await prefetcher.drain()
            if salt != "fail":
                assert prefetcher.prefetch(["frontend-engineer"]) == []  # done: not again
            return prefetcher

    prefetcher = asyncio.run(go("tenant-a"))
    assert len(sent) == 2 and prefetcher.errors == [] and len(prefetcher.done) == 2
    assert all(b["max_tokens"] == 1 and b["cache_salt"] == "tenant-a" for b in sent)
    assert sent[0]["messages"] == [dict(m) for m in warm_messages(library, "frontend-engineer")]
    failed = asyncio.run(go("fail"))  # a failed prefetch is kept, not raised
    assert len(failed.errors) == 2 and failed.done == {} and failed.pending == 0
