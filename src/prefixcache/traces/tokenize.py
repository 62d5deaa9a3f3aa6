"""Turn a trace's chat requests into the token ids the server would prefill.

Three sources, most exact first:

- the trace's own ``prompt_token_ids`` (nothing to do);
- ``ServerTokenizer``: the server's ``POST /tokenize`` with the messages, so its own chat
  template and tokenizer are applied (requests sent concurrently, bounded);
- ``LocalTokenizer``: the model's tokenizer loaded from a folder (``transformers``), the
  chat template rendered to text and the texts encoded in one batch without special
  tokens, as vLLM does for chat requests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from ..errors import PrefixCacheError, ProviderUnavailableError
from ..llm.models import Message
from .records import TraceRecord


class TokenizerError(PrefixCacheError):
    """The trace could not be tokenized (tokenizer missing, server down, bad template)."""


class ChatTokenizer(Protocol):
    name: str

    def encode_chats(self, chats: Sequence[Sequence[Message]]) -> list[list[int]]: ...


class LocalTokenizer:
    """The model's tokenizer and chat template, loaded from a model folder."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_dir():
            raise TokenizerError(
                f"{path} is not a model folder; give --tokenizer a folder with "
                "tokenizer.json / tokenizer_config.json (or use --base-url with a server)."
            )
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:  # pragma: no cover - vllm brings transformers
            raise TokenizerError(
                "A local tokenizer needs transformers: pip install 'prefixcache[engine]'"
            ) from exc
        try:
            self._tok: Any = AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError) as exc:
            raise TokenizerError(f"Could not load a tokenizer from {path}: {exc}") from exc
        if not getattr(self._tok, "chat_template", None):
            raise TokenizerError(f"The tokenizer in {path} has no chat template.")
        self.name = f"local:{path}"

    def render(self, messages: Sequence[Message]) -> str:
        text = self._tok.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
        )
        return str(text)

    def encode_chats(self, chats: Sequence[Sequence[Message]]) -> list[list[int]]:
        try:
            texts = [self.render(chat) for chat in chats]
        except Exception as exc:  # jinja errors of the model's own template
            raise TokenizerError(f"The chat template failed on a request: {exc}") from exc
        encoded = self._tok(texts, add_special_tokens=False)["input_ids"]
        return [list(ids) for ids in encoded]


class ServerTokenizer:
    """``POST /tokenize`` on a vLLM server (chat template applied by the server)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout_s: float = 60.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.concurrency = max(1, concurrency)
        self.timeout_s = timeout_s
        self.name = f"server:{self.base_url}"

    async def encode_chats_async(self, chats: Sequence[Sequence[Message]]) -> list[list[int]]:
        """``encode_chats`` for a caller that is already in an event loop (the service)."""
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        limit = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(
            base_url=self.base_url, timeout=self.timeout_s, headers=headers
        ) as client:

            async def one(i: int, chat: Sequence[Message]) -> list[int]:
                body = {
                    "model": self.model,
                    "messages": [dict(m) for m in chat],
                    "add_generation_prompt": True,
                }
                async with limit:
                    try:
                        reply = await client.post("/tokenize", json=body)
                    except httpx.TransportError as exc:
                        raise ProviderUnavailableError(
                            f"{self.base_url}/tokenize: {type(exc).__name__}: {exc}; is the "
                            "server up? (or tokenize locally with --tokenizer FOLDER)",
                            url=self.base_url,
                        ) from exc
                if reply.status_code != 200:
                    raise TokenizerError(
                        f"{self.base_url}/tokenize answered {reply.status_code} for request "
                        f"{i + 1}: {reply.text[:200]}"
                    )
                tokens = reply.json().get("tokens")
                if not isinstance(tokens, list):
                    raise TokenizerError(f"{self.base_url}/tokenize answered without tokens")
                return [int(t) for t in tokens]

            return list(await asyncio.gather(*(one(i, c) for i, c in enumerate(chats))))

    def encode_chats(self, chats: Sequence[Sequence[Message]]) -> list[list[int]]:
        return asyncio.run(self.encode_chats_async(chats))


def tokenize_trace(
    records: Sequence[TraceRecord], tokenizer: ChatTokenizer | None
) -> tuple[list[list[int]], float]:
    """Token ids for every record (the trace's own ids where it has them) and the seconds
    spent tokenizing."""
    started = time.perf_counter()
    missing = [i for i, r in enumerate(records) if r.prompt_token_ids is None]
    out: list[list[int]] = [list(r.prompt_token_ids or ()) for r in records]
    if missing:
        if tokenizer is None:
            raise TokenizerError(
                f"{len(missing)} requests have no prompt_token_ids; give --base-url (a vLLM "
                "server's /tokenize) or --tokenizer (a model folder)."
            )
        encoded = tokenizer.encode_chats([records[i].messages for i in missing])
        for i, ids in zip(missing, encoded, strict=True):
            out[i] = ids
    return out, time.perf_counter() - started
