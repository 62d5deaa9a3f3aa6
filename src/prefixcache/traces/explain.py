"""``prefixcache explain``: why each request of a trace missed the prefix cache.

For every request, in trace order:

1. **What vLLM could reuse**: the longest run of leading full blocks that an earlier
   request under the same ``cache_salt`` already had (looked up by chained block hash,
   so a trace costs time linear in its tokens), never the last prompt token's block.
   That is what an engine with room for everything would report as cached.
2. **The request it should have matched**: the latest earlier request of its *family*
   (same agent label; without one, the same longest line of the first message, numbers
   and hex ids masked).
3. **The break**: the first token where the two differ. If the texts *realign* after it,
   i.e. the same content continues in both (the static prompt after a timestamp, the
   rest of a tool list after two swapped items), those tokens were lost to the break: a
   layout that kept the changing part after them would have had them cached. A request
   that only appends new content (the next turn) has no break. The first request of a
   family is compared with the latest request under its salt (another agent) and
   breaks only if at least half of it realigns (layers agents share, after a dynamic
   block).

The break is placed by token, by message index and character offset, shown with the
text around it on both sides, and given a cause (see ``causes``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..layout.cache_model import block_hashes, common_prefix_len, max_cacheable_blocks
from ..llm.models import Message
from .causes import Cause, classify, classify_messages_order
from .records import TraceRecord

#: tokens that must match in a row before two prompts count as realigned
ANCHOR = 16
#: characters of context shown on each side of a break
CONTEXT_BEFORE = 60
CONTEXT_AFTER = 90


def message_text(message: Message) -> str:
    """A message's content as text (OpenAI content-part lists joined)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, Mapping):
                text = part.get("text")
                parts.append(text if isinstance(text, str) else json.dumps(part, sort_keys=True))
            else:
                parts.append(str(part))
        return "".join(parts)
    if content is None:
        return json.dumps(message.get("tool_calls", ""), sort_keys=True)
    return json.dumps(content, sort_keys=True)


_VOLATILE = re.compile(r"[0-9a-fA-F]{6,}|\d+")


def family_of(record: TraceRecord, salt: str | None = None) -> str:
    """The agent label; without one, the first message's longest line (where a prompt's
    static instructions usually are), its numbers and hex ids masked, so that requests
    differing only in a timestamp, an id or a short dynamic line stay one family. With
    ``salt`` (a trace of several tenants), the family's name ends with ``@`` and the
    salt's first characters."""
    name = family_key(record.messages, record.agent)
    if salt:
        return f"{name} @{salt[:8]}"
    return name


def family_key(messages: Sequence[Message], agent: str | None = None) -> str:
    """A request family from its messages (the rule of ``family_of``, shared with the
    service's stabilizer)."""
    if agent:
        return agent
    if not messages:
        return "[empty]"
    text = message_text(messages[0])
    line = max(text.splitlines() or [""], key=len)
    key = " ".join(_VOLATILE.sub("#", line).split())[:200]
    digest = hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()[:6]
    return f"[{messages[0].get('role', '?')} {digest}] {key[:28]}"


@dataclass(frozen=True)
class Break:
    """Where a request parted from the one it should have matched, and why."""

    request: int  # 0-based position in the trace
    line: int  # line in the trace file
    family: str
    reference: int  # the request it was compared with (0-based)
    token: int  # first differing token
    message: int  # index of the first differing message
    char: int  # character offset in that message's content
    cause: Cause
    ours: str  # the changed text in this request
    theirs: str  # ... and in the reference
    before: str  # text before the break (same in both)
    after_ours: str
    after_theirs: str
    tokens_lost: int  # tokens after the break that both have: cacheable but for the break
    #: the reference's family (another one when this request is the first of its own)
    reference_family: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["cause"] = self.cause.value
        data["advice"] = self.cause.advice
        return data


@dataclass(frozen=True)
class RequestExplanation:
    index: int
    line: int
    family: str
    salt: str | None
    prompt_tokens: int
    #: tokens an earlier request under the same salt already had (token-exact)
    shared_tokens: int
    #: what vLLM can reuse of them: full blocks, the last token recomputed
    reusable_tokens: int
    measured_cached: int | None
    brk: Break | None


@dataclass
class FamilySummary:
    family: str
    requests: int = 0
    prompt_tokens: int = 0
    reusable_tokens: int = 0
    measured_prompt_tokens: int = 0
    measured_cached: int = 0
    tokens_lost: int = 0
    breaks: int = 0
    causes: Counter[str] = field(default_factory=Counter)

    @property
    def hit_rate(self) -> float | None:
        return self.reusable_tokens / self.prompt_tokens if self.prompt_tokens else None

    @property
    def measured_hit_rate(self) -> float | None:
        if not self.measured_prompt_tokens:
            return None
        return self.measured_cached / self.measured_prompt_tokens

    @property
    def fixed_hit_rate(self) -> float | None:
        """The hit rate had the breaks' lost tokens been reused."""
        if not self.prompt_tokens:
            return None
        return min(1.0, (self.reusable_tokens + self.tokens_lost) / self.prompt_tokens)

    def top_causes(self, n: int = 3) -> list[tuple[str, int]]:
        return self.causes.most_common(n)

    def to_json(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "reusable_tokens": self.reusable_tokens,
            "hit_rate": self.hit_rate,
            "measured_hit_rate": self.measured_hit_rate,
            "fixed_hit_rate": self.fixed_hit_rate,
            "tokens_lost": self.tokens_lost,
            "breaks": self.breaks,
            "causes": dict(self.causes.most_common()),
        }


@dataclass
class ExplainReport:
    block_size: int
    tokenizer: str
    requests: list[RequestExplanation]
    families: list[FamilySummary]
    tokenize_seconds: float = 0.0
    analyze_seconds: float = 0.0
    #: family -> the reusable hit rate had the gateway's stabilizer (``on``) sent the
    #: trace (``traces/stabilize.py``); empty when not computed
    stabilized: dict[str, float | None] = field(default_factory=dict)

    @property
    def total(self) -> FamilySummary:
        total = FamilySummary("all")
        for f in self.families:
            total.requests += f.requests
            total.prompt_tokens += f.prompt_tokens
            total.reusable_tokens += f.reusable_tokens
            total.measured_prompt_tokens += f.measured_prompt_tokens
            total.measured_cached += f.measured_cached
            total.tokens_lost += f.tokens_lost
            total.breaks += f.breaks
            total.causes.update(f.causes)
        return total

    @property
    def breaks(self) -> list[Break]:
        return [r.brk for r in self.requests if r.brk is not None]

    def worst(self, n: int = 5) -> list[Break]:
        """The ``n`` breaks that lost the most tokens, one per family and cause first."""
        ranked = sorted(self.breaks, key=lambda b: (-b.tokens_lost, b.request))
        seen: set[tuple[str, Cause]] = set()
        first = []
        for b in ranked:
            if (b.family, b.cause) not in seen:
                seen.add((b.family, b.cause))
                first.append(b)
        rest = [b for b in ranked if b not in first]
        return (first + rest)[:n]

    def to_json(self, worst: int = 20) -> dict[str, Any]:
        total = self.total
        return {
            "block_size": self.block_size,
            "tokenizer": self.tokenizer,
            "requests": len(self.requests),
            "prompt_tokens": total.prompt_tokens,
            "reusable_tokens": total.reusable_tokens,
            "hit_rate": total.hit_rate,
            "measured_hit_rate": total.measured_hit_rate,
            "fixed_hit_rate": total.fixed_hit_rate,
            "tokens_lost": total.tokens_lost,
            "causes": dict(total.causes.most_common()),
            "families": [
                {**f.to_json(), "stabilized_hit_rate": self.stabilized.get(f.family)}
                for f in self.families
            ],
            "worst_breaks": [b.to_json() for b in self.worst(worst)],
            "per_request": [
                {
                    "index": r.index,
                    "line": r.line,
                    "family": r.family,
                    "prompt_tokens": r.prompt_tokens,
                    "shared_tokens": r.shared_tokens,
                    "reusable_tokens": r.reusable_tokens,
                    "measured_cached": r.measured_cached,
                    "break": r.brk.to_json() if r.brk else None,
                }
                for r in self.requests
            ],
            "seconds": {"tokenize": self.tokenize_seconds, "analyze": self.analyze_seconds},
        }


def realigned_tokens(ours: Sequence[int], theirs: Sequence[int], start: int) -> int:
    """Tokens of ``ours`` after ``start`` that continue content ``theirs`` also has after
    ``start``: runs of at least ``ANCHOR`` equal tokens, found through an index of
    ``theirs``' ANCHOR-grams at a stride of ANCHOR (any run of 2*ANCHOR-1 or more
    contains one). Linear in the two lengths."""
    k = ANCHOR
    index: dict[tuple[int, ...], int] = {}
    for j in range(start, len(theirs) - k + 1, k):
        index.setdefault(tuple(theirs[j : j + k]), j)
    if not index:
        return 0
    lost, i, floor = 0, start, start
    n_ours, n_theirs = len(ours), len(theirs)
    while i <= n_ours - k:
        found = index.get(tuple(ours[i : i + k]))
        if found is None:
            i += 1
            continue
        j = found
        back = 0  # the run may have started before the anchor
        while i - back > floor and j - back > start and ours[i - back - 1] == theirs[j - back - 1]:
            back += 1
        run = k
        while i + run < n_ours and j + run < n_theirs and ours[i + run] == theirs[j + run]:
            run += 1
        lost += back + run
        i += run
        floor = i
    return lost


def _locate(ours: Sequence[Message], theirs: Sequence[Message]) -> tuple[int, int]:
    """The first differing message and the character offset in its content."""
    for m, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        if a.get("role") != b.get("role"):
            return m, 0
        ta, tb = message_text(a), message_text(b)
        if ta != tb:
            return m, common_prefix_len(ta, tb)
    return min(len(ours), len(theirs)), 0


def describe_break(
    record: TraceRecord,
    reference: TraceRecord,
    *,
    index: int,
    ref_index: int,
    family: str,
    token: int,
    lost: int,
    reference_family: str = "",
) -> Break:
    """The break between ``record`` and ``reference``: where, the text, the cause."""
    m, char = _locate(record.messages, reference.messages)
    a = message_text(record.messages[m]) if m < len(record.messages) else ""
    b = message_text(reference.messages[m]) if m < len(reference.messages) else ""
    if classify_messages_order(
        [message_text(x) for x in record.messages], [message_text(x) for x in reference.messages]
    ):
        diff_cause, ours, theirs = Cause.REORDERED, a[char : char + 40], b[char : char + 40]
    else:
        found = classify(a, b, char)
        diff_cause, ours, theirs = found.cause, found.ours, found.theirs
    return Break(
        request=index,
        line=record.line,
        family=family,
        reference=ref_index,
        token=token,
        message=m,
        char=char,
        cause=diff_cause,
        ours=ours,
        theirs=theirs,
        before=a[max(0, char - CONTEXT_BEFORE) : char],
        after_ours=a[char : char + CONTEXT_AFTER],
        after_theirs=b[char : char + CONTEXT_AFTER],
        tokens_lost=lost,
        reference_family=reference_family or family,
    )


def _break_against(
    records: Sequence[TraceRecord],
    tokens: Sequence[Sequence[int]],
    hashes_of: Sequence[Sequence[int]],
    i: int,
    ref: int,
    family: str,
    block_size: int,
    need: int,
    salted: bool = False,
) -> Break | None:
    """Request ``i``'s break against request ``ref``, if at least ``need`` tokens realign."""
    toks, ref_toks = tokens[i], tokens[ref]
    hashes, ref_hashes = hashes_of[i], hashes_of[ref]
    same = 0
    while same < min(len(hashes), len(ref_hashes)) and hashes[same] == ref_hashes[same]:
        same += 1
    start = same * block_size
    token = start + common_prefix_len(toks[start:], ref_toks[start:])
    if token >= len(toks) or token >= len(ref_toks):
        return None  # one is a prefix of the other: an append, not a break
    lost = realigned_tokens(toks, ref_toks, token)
    if lost < need:
        return None
    return describe_break(
        records[i],
        records[ref],
        index=i,
        ref_index=ref,
        family=family,
        token=token,
        lost=lost,
        reference_family=family_of(records[ref], records[ref].cache_salt if salted else None),
    )


def explain(
    records: Sequence[TraceRecord],
    tokens: Sequence[Sequence[int]],
    block_size: int,
    *,
    tokenizer: str = "",
    min_lost: int | None = None,
) -> ExplainReport:
    """Explain every request of a tokenized trace (``tokens[i]`` belongs to ``records[i]``).

    ``min_lost``: tokens a break must lose to be reported (default: one block).
    """
    if len(records) != len(tokens):
        raise ValueError(f"{len(records)} records but {len(tokens)} token lists")
    threshold = block_size if min_lost is None else min_lost
    # two tenants' families never merge: with more than one salt in the trace, a
    # family's name carries its salt
    several_salts = len({r.cache_salt for r in records}) > 1
    owner: dict[int, int] = {}  # block hash -> latest request that had it
    last_of_family: dict[tuple[str | None, str], int] = {}
    last_of_salt: dict[str | None, int] = {}
    hashes_of: list[list[int]] = []
    out: list[RequestExplanation] = []
    families: dict[str, FamilySummary] = {}
    for i, (record, toks) in enumerate(zip(records, tokens, strict=True)):
        salt = record.cache_salt
        family = family_of(record, salt if several_salts else None)
        hashes = block_hashes(toks, block_size, salt)
        hashes_of.append(hashes)
        matched = 0
        while matched < len(hashes) and hashes[matched] in owner:
            matched += 1
        reusable = min(matched, max_cacheable_blocks(len(toks), block_size)) * block_size
        # token-exact shared prefix with the owner of the last matched block (it goes on
        # at most one partial block further)
        shared = 0
        if matched:
            best = owner[hashes[matched - 1]]
            start = matched * block_size
            shared = start + common_prefix_len(toks[start:], tokens[best][start:])
        brk: Break | None = None
        ref = last_of_family.get((salt, family))
        need = max(threshold, 1)
        if ref is None:
            # the first of its family: compared with the latest request under its salt,
            # it breaks only if most of it (shared layers after a dynamic block) realigns
            ref = last_of_salt.get(salt)
            need = max(need, len(toks) // 2)
        if ref is not None:
            brk = _break_against(
                records, tokens, hashes_of, i, ref, family, block_size, need, several_salts
            )
        for h in hashes:
            owner[h] = i
        last_of_family[(salt, family)] = i
        last_of_salt[salt] = i
        out.append(
            RequestExplanation(
                index=i,
                line=record.line,
                family=family,
                salt=salt,
                prompt_tokens=len(toks),
                shared_tokens=shared,
                reusable_tokens=reusable,
                measured_cached=record.cached_tokens,
                brk=brk,
            )
        )
        summary = families.setdefault(family, FamilySummary(family))
        summary.requests += 1
        summary.prompt_tokens += len(toks)
        summary.reusable_tokens += reusable
        if record.cached_tokens is not None:
            summary.measured_prompt_tokens += record.prompt_tokens or len(toks)
            summary.measured_cached += record.cached_tokens
        if brk is not None:
            summary.breaks += 1
            summary.tokens_lost += brk.tokens_lost
            summary.causes[brk.cause.value] += 1
    ordered = sorted(families.values(), key=lambda f: (-f.tokens_lost, f.family))
    return ExplainReport(block_size, tokenizer, out, ordered)
