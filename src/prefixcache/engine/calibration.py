"""The engine's speed on this machine, measured at start: prefill tokens/s, a cached
request's time, decode time per token.

Machines of the same kind differ about eight times in prefill speed (with and without
native BF16), so long commands size themselves and estimate their time from these
figures instead of from one fast machine. Three requests under a unique ``cache_salt``:
one uncached prompt of about 1,100 tokens (1 token out), the same prompt again (all but
its last partial block cached, 1 token out) and once more with 17 tokens out. The
prefill rate is the difference of the first two: the tokens the second did not prefill
over the time it did not take, so fixed per-request costs cancel out.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from ..errors import EngineError

#: lines of the calibration prompt (about 1,100 tokens with the embedded model's tokenizer)
CALIBRATION_LINES = 48
DECODE_TOKENS = 16


def calibration_prompt(lines: int = CALIBRATION_LINES) -> str:
    """Deterministic, ordinary English text (no repeated line, so tokens are typical)."""
    subjects = ("The planner", "A reviewer", "The tester", "An engineer", "The writer")
    verbs = ("reads", "checks", "rewrites", "measures", "explains", "ships")
    objects = ("the schema", "each request", "the release notes", "a failing test", "the cache")
    out = []
    for i in range(lines):
        out.append(
            f"Step {i + 1}: {subjects[i % 5]} {verbs[i % 6]} {objects[(i * 7) % 5]} "
            f"before task {i * 37 % 101} and records what changed in line {i * 13 % 97}."
        )
    return "\n".join(out)


@dataclass(frozen=True)
class Calibration:
    """Measured on the running engine; ``prefill_tokens_per_s`` sizes long commands."""

    prompt_tokens: int
    prompt_chars: int
    uncached_request_s: float
    cached_tokens: int
    cached_request_s: float
    decode_s_per_token: float
    prefill_tokens_per_s: float
    measured_at: str

    @property
    def chars_per_token(self) -> float:
        return self.prompt_chars / max(self.prompt_tokens, 1)

    def prefill_s(self, tokens: float) -> float:
        return tokens / self.prefill_tokens_per_s

    def request_s(self, uncached_tokens: float, output_tokens: int) -> float:
        """One request's time: its uncached prefill, the fixed cost of a request (a
        cached request's time) and its decode steps past the first."""
        return (
            self.prefill_s(uncached_tokens)
            + self.cached_request_s
            + max(output_tokens - 1, 0) * self.decode_s_per_token
        )

    def summary(self) -> str:
        return (
            f"prefill {self.prefill_tokens_per_s:,.0f} tokens/s "
            f"({self.prompt_tokens:,} uncached tokens in {self.uncached_request_s:.2f} s), "
            f"a cached request {self.cached_request_s:.2f} s, "
            f"decode {self.decode_s_per_token * 1000:.0f} ms/token"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> Calibration | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})
        except (KeyError, TypeError):
            return None


def _request(
    client: httpx.Client, model: str, prompt: str, salt: str, max_tokens: int
) -> tuple[float, dict[str, Any]]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "min_tokens": max_tokens,
        "temperature": 0,
        "cache_salt": salt,
    }
    started = time.perf_counter()
    try:
        response = client.post("/v1/chat/completions", json=body)
    except httpx.HTTPError as exc:
        raise EngineError(f"The calibration request failed: {exc}") from exc
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise EngineError(
            f"The calibration request got HTTP {response.status_code}: {response.text[:300]}"
        )
    usage = response.json().get("usage") or {}
    return elapsed, usage


def calibrate(
    base_url: str, model: str, *, api_key: str | None = None, timeout: float = 600.0
) -> Calibration:
    """Measure the running engine (three requests under a fresh salt; see the module doc)."""
    prompt = calibration_prompt()
    salt = f"calibration-{uuid.uuid4().hex}"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=base_url, timeout=timeout, headers=headers) as client:
        uncached_s, usage = _request(client, model, prompt, salt, 1)
        cached_s, cached_usage = _request(client, model, prompt, salt, 1)
        decode_s, _ = _request(client, model, prompt, salt, DECODE_TOKENS + 1)
    tokens = int(usage.get("prompt_tokens") or 0)
    details = cached_usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0)
    if tokens <= 0 or cached <= 0 or uncached_s <= cached_s:
        raise EngineError(
            "The calibration could not measure the prefill rate "
            f"({tokens} prompt tokens, {cached} cached on the repeat, "
            f"{uncached_s:.2f} s then {cached_s:.2f} s): is prefix caching on?"
        )
    return Calibration(
        prompt_tokens=tokens,
        prompt_chars=len(prompt),
        uncached_request_s=round(uncached_s, 4),
        cached_tokens=cached,
        cached_request_s=round(cached_s, 4),
        decode_s_per_token=round(max(decode_s - cached_s, 0.0) / DECODE_TOKENS, 5),
        prefill_tokens_per_s=round(cached / (uncached_s - cached_s), 1),
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
