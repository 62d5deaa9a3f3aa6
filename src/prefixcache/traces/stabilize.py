"""Stabilizing prompts nobody rewrote: learn which whole lines of a request family's
system messages change between requests, and move them after the lines that do not.

Pure logic (no I/O): the service's gateway feeds it requests (``service/stabilizer.py``);
``explain --fix`` reads the same notion of family and volatile line.

What is learned, per scope (a tenant) and family (``explain.family_key``: the agent
label, else the first message's longest line with its numbers masked), from the last
``history`` requests of that family:

- **volatile lines**: lines of a ``system``/``developer`` message that are not in every
  observed version of that message (a timestamp, a request id, a user's name, a turn
  counter), and static lines whose order changed (a one-tool-a-line list built from a
  set);
- **tool order**: a ``tools`` list whose names came in another order with the same set;
- **whitespace**: ``\\r\\n`` line ends or trailing spaces that vary between versions.

What a rewrite does (``Stabilizer.rewrite``), only for a family seen at least twice and
only when the static text that moves up is at least ``min_gain_chars`` long:

- in each ``system``/``developer`` message: the static lines first, in their order, then
  the volatile lines, in theirs (nothing dropped, nothing inside a line changed; with
  varying whitespace, each line's trailing whitespace and ``\\r`` removed);
- a tool list whose order varied: sorted by function name, each schema's keys sorted;
- nothing else: user, assistant and tool messages, the messages' order and roles, every
  other field stay as they are.
"""

from __future__ import annotations

import json
import re
from collections import Counter, OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..llm.models import Message
from .explain import explain, family_key
from .records import TraceRecord
from .tokenize import ChatTokenizer

Mode = Literal["off", "shadow", "on"]
MODES: tuple[Mode, ...] = ("off", "shadow", "on")
#: roles whose text is stabilized (never user, assistant or tool messages)
STABLE_ROLES = frozenset({"system", "developer"})

#: characters per token assumed when a block size becomes the least static text worth
#: moving (a rewrite must gain at least one whole KV block)
CHARS_PER_TOKEN = 4

#: what normalising strips from a line's end (ASCII whitespace; \r of a \r\n)
_SPACES = " \t\r\f\v"
_SHAPE = re.compile(r"[0-9a-fA-F]{6,}|\d+")


def allowed_mode(tenant: Mode, requested: str | None) -> Mode:
    """The mode for one request: the header's, at most the tenant's (off < shadow < on);
    no or an unknown header value: the tenant's."""
    if requested is None:
        return tenant
    wanted = requested.strip().lower()
    if wanted not in MODES:
        return tenant
    return MODES[min(MODES.index(wanted), MODES.index(tenant))]


def line_shape(line: str) -> str:
    """A line's shape for reports: numbers and hex ids masked, cut at 48 characters, so
    that a family's report never shows one user's text to another."""
    masked = _SHAPE.sub("#", line.strip())
    words = masked.split()
    head = " ".join(words[:3])
    return (head[:48] + (" …" if len(words) > 3 or len(head) > 48 else "")) or "(blank)"


def _norm(line: str) -> str:
    return line.rstrip(_SPACES)


def _tool_name(tool: Any) -> str:
    if isinstance(tool, Mapping):
        fn = tool.get("function")
        if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
            return str(fn["name"])
        if isinstance(tool.get("name"), str):
            return str(tool["name"])
    return json.dumps(tool, sort_keys=True, default=str)


def _sorted_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _sorted_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(v) for v in value]
    return value


@dataclass(frozen=True)
class Observation:
    """One request of a family, as the stabilizer keeps it."""

    #: message index -> its lines, whitespace-normalised
    lines: dict[int, tuple[str, ...]]
    #: message index -> the same lines as a set
    sets: dict[int, frozenset[str]]
    #: message index -> the (normalised) lines that came with trailing whitespace or \r
    spaced: dict[int, frozenset[str]]
    tools: tuple[str, ...] | None
    #: message index -> (the static set it was filtered by, its static lines in order):
    #: the static set rarely changes, so the filtering is done once per version
    ordered: dict[int, tuple[frozenset[str], tuple[str, ...]]] = field(default_factory=dict)


def observe(messages: Sequence[Message], tools: Sequence[Any] | None) -> Observation:
    lines: dict[int, tuple[str, ...]] = {}
    sets: dict[int, frozenset[str]] = {}
    spaced: dict[int, frozenset[str]] = {}
    for i, message in enumerate(messages):
        if message.get("role") in STABLE_ROLES and isinstance(message.get("content"), str):
            text = str(message["content"])
            raw = tuple(text.split("\n"))
            normalised = tuple(x.rstrip(_SPACES) for x in raw)
            if normalised == raw:  # no line ends in whitespace (compared in C)
                spaced[i] = frozenset()
            else:
                spaced[i] = frozenset(n for n, r in zip(normalised, raw, strict=True) if n != r)
            lines[i] = normalised
            sets[i] = frozenset(normalised)
    names = tuple(_tool_name(t) for t in tools) if tools else None
    return Observation(lines, sets, spaced, names)


@dataclass(frozen=True)
class Plan:
    """What a rewrite of the current request would move."""

    #: message index -> the indices of its lines that are volatile
    volatile: dict[int, tuple[int, ...]]
    #: message index -> normalise its whitespace
    normalise: frozenset[int]
    sort_tools: bool
    #: characters of static text that move up before the first volatile line
    gain_chars: int
    #: shapes of the lines that move (for reports)
    shapes: tuple[str, ...]

    @property
    def moves(self) -> int:
        return sum(len(v) for v in self.volatile.values())

    @property
    def changes_anything(self) -> bool:
        return bool(self.moves or self.sort_tools or self.normalise)


@dataclass(frozen=True)
class Rewrite:
    """A request after stabilization (the same objects when nothing changed)."""

    messages: list[Message]
    tools: list[Any] | None
    family: str
    plan: Plan | None
    #: why nothing was rewritten ("" when something was)
    skipped: str = ""

    @property
    def rewritten(self) -> bool:
        return not self.skipped and self.plan is not None and self.plan.changes_anything

    def header(self) -> str:
        """``X-Prefixcache-Stabilized``: ``lines=N; tools=sorted|unchanged``."""
        plan = self.plan if self.rewritten else None
        lines = plan.moves if plan else 0
        tools = "sorted" if plan and plan.sort_tools else "unchanged"
        return f"lines={lines}; tools={tools}"


@dataclass
class _Family:
    seen: int = 0
    history: deque[Observation] = field(default_factory=deque)
    #: message index -> static lines once seen out of order (they always move after)
    unordered: dict[int, frozenset[str]] = field(default_factory=dict)


class Stabilizer:
    """Learns families and rewrites their requests; bounded (``max_families`` per
    stabilizer, LRU; the last ``history`` requests per family)."""

    def __init__(
        self, *, history: int = 8, max_families: int = 4096, min_gain_chars: int = 512
    ) -> None:
        if history < 2:
            raise ValueError("history must keep at least 2 requests (a family seen twice)")
        self.history = history
        self.max_families = max_families
        self.min_gain_chars = min_gain_chars
        self._families: OrderedDict[tuple[str, str], _Family] = OrderedDict()

    def __len__(self) -> int:
        return len(self._families)

    def learn(
        self,
        scope: str,
        messages: Sequence[Message],
        tools: Sequence[Any] | None = None,
        agent: str | None = None,
    ) -> tuple[str, Plan | None]:
        """Record this request under its family; the plan for it (None until the family
        has been seen twice)."""
        name = family_key(messages, agent)
        key = (scope, name)
        fam = self._families.get(key)
        if fam is None:
            fam = self._families[key] = _Family(history=deque(maxlen=self.history))
            while len(self._families) > self.max_families:
                self._families.popitem(last=False)
        else:
            self._families.move_to_end(key)
        current = observe(messages, tools)
        fam.history.append(current)
        fam.seen += 1
        if fam.seen < 2:
            return name, None
        return name, self._plan(current, list(fam.history), fam.unordered)

    def _plan(
        self,
        current: Observation,
        seen: list[Observation],
        unordered: dict[int, frozenset[str]],
    ) -> Plan:
        volatile: dict[int, tuple[int, ...]] = {}
        normalise: set[int] = set()
        shapes: list[str] = []
        gain = 0
        for index, lines in current.lines.items():
            kept = [o for o in seen if index in o.lines]
            if len(kept) < 2:
                continue
            common = frozenset.intersection(*(o.sets[index] for o in kept))
            moving = {i for i, line in enumerate(lines) if line not in common}
            # static lines whose order changed against any kept version move too (a
            # one-tool-a-line list from a set): what stays keeps one order in all. Lines
            # once found out of order are remembered, so the usual check is one compare
            known = unordered.get(index, frozenset())
            ordered = common - known if known else common
            moving.update(i for i, x in enumerate(lines) if x in known and x in common)
            ours = [(i, x) for i, x in enumerate(lines) if x in ordered]
            static = tuple(x for _, x in ours)
            found: set[str] = set()
            versions = {id(v): v for v in (_static_order(o, index, ordered) for o in kept[:-1])}
            for version in versions.values():
                for k in _out_of_order(static, version):
                    moving.add(ours[k][0])
                    found.add(ours[k][1])
            if found:
                unordered[index] = known | found
            if lines and lines[-1] == "":
                moving.discard(len(lines) - 1)  # the final newline stays final
            if _varies_in_whitespace(seen, index):
                normalise.add(index)
            if not moving:
                continue
            first = min(moving)
            after = len("\n".join(lines[first + 1 :]))
            gain += after - sum(len(lines[i]) + 1 for i in moving if i > first)
            volatile[index] = tuple(sorted(moving))
            shapes += [line_shape(lines[i]) for i in sorted(moving)]
        sort_tools = False
        if current.tools:
            orders = {o.tools for o in seen if o.tools}
            sets = {frozenset(t) for t in orders}
            sort_tools = (
                len(orders) > 1 and len(sets) == 1 and list(current.tools) != sorted(current.tools)
            )
        return Plan(volatile, frozenset(normalise), sort_tools, gain, tuple(shapes))

    def rewrite(
        self,
        messages: Sequence[Message],
        tools: Sequence[Any] | None,
        family: str,
        plan: Plan | None,
    ) -> Rewrite:
        """The request with the plan applied, or as it came (and why not)."""
        original = list(messages)
        kept = list(tools) if tools is not None else None
        if plan is None:
            return Rewrite(original, kept, family, None, "family seen once")
        if not plan.changes_anything:
            return Rewrite(original, kept, family, plan, "nothing varies")
        if (
            plan.moves
            and plan.gain_chars < self.min_gain_chars
            and not (plan.sort_tools or plan.normalise)
        ):
            return Rewrite(original, kept, family, plan, "gain under one block")
        out: list[Message] = []
        for i, message in enumerate(original):
            text = message.get("content")
            if (i not in plan.volatile and i not in plan.normalise) or not isinstance(text, str):
                out.append(message)
                continue
            raw = text.split("\n")
            trailing = len(raw) > 1 and raw[-1] == ""
            body = raw[:-1] if trailing else raw
            if i in plan.normalise:
                body = [_norm(x) for x in body]
            moving = set(plan.volatile.get(i, ()))
            static = [x for k, x in enumerate(body) if k not in moving]
            tail = [x for k, x in enumerate(body) if k in moving]
            new = "\n".join(static + tail) + ("\n" if trailing else "")
            out.append({**message, "content": new})
        new_tools = kept
        if plan.sort_tools and kept is not None:
            new_tools = [_sorted_keys(t) for t in sorted(kept, key=_tool_name)]
        return Rewrite(out, new_tools, family, plan)

    def process(
        self,
        scope: str,
        messages: Sequence[Message],
        tools: Sequence[Any] | None = None,
        agent: str | None = None,
    ) -> Rewrite:
        """Learn from this request, then rewrite it (what ``on`` sends; ``shadow`` records)."""
        family, plan = self.learn(scope, messages, tools, agent)
        return self.rewrite(messages, tools, family, plan)


def _varies_in_whitespace(seen: Sequence[Observation], index: int) -> bool:
    """A line of this message that comes with trailing whitespace or ``\r`` in one version
    and without in another (``\r\n`` from one client, ``\n`` from another)."""
    kept = [o for o in seen if index in o.lines]
    spaced = frozenset().union(*(o.spaced[index] for o in kept))
    if not spaced:
        return False
    return any(bool((o.sets[index] - o.spaced[index]) & spaced) for o in kept)


def _static_order(o: Observation, index: int, common: frozenset[str]) -> tuple[str, ...]:
    cached = o.ordered.get(index)
    if cached is not None and (cached[0] is common or cached[0] == common):
        return cached[1]
    order = tuple(x for x in o.lines[index] if x in common)
    o.ordered[index] = (common, order)
    return order


def _same_run(a: Sequence[str], b: Sequence[str], from_end: bool) -> int:
    """The length of the common head (or tail) of ``a`` and ``b``, by binary search on
    slice equality (compared in C, not line by line in Python)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        mid = (low + high + 1) // 2
        same = a[len(a) - mid :] == b[len(b) - mid :] if from_end else a[:mid] == b[:mid]
        if same:
            low = mid
        else:
            high = mid - 1
    return low


def _out_of_order(ours: Sequence[str], theirs: Sequence[str]) -> range | set[int]:
    """Indices into ``ours`` of the static lines that lost their place against another
    version: between the common head and tail, a block that is the same lines in another
    order (a list from a set) moves as a whole; anything else moves all but a longest
    common subsequence."""
    if len(ours) == len(theirs) and ours == theirs:
        return range(0)
    head = _same_run(ours, theirs, from_end=False)
    tail = _same_run(ours[head:], theirs[head:], from_end=True)
    a, b = ours[head : len(ours) - tail], theirs[head : len(theirs) - tail]
    if Counter(a) == Counter(b):
        return range(head, len(ours) - tail)
    kept = _lcs(a, b) if len(a) * len(b) <= 250_000 else set()
    return {head + i for i in range(len(a)) if i not in kept}


def _lcs(a: Sequence[str], b: Sequence[str]) -> set[int]:
    """Indices into ``a`` of a longest common subsequence with ``b``."""
    if not a or not b:
        return set()
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) - 1, -1, -1):
        for j in range(len(b) - 1, -1, -1):
            table[i][j] = (
                table[i + 1][j + 1] + 1 if a[i] == b[j] else max(table[i + 1][j], table[i][j + 1])
            )
    keep: set[int] = set()
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i] == b[j]:
            keep.add(i)
            i, j = i + 1, j + 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return keep


@dataclass(frozen=True)
class FamilyFix:
    """What a family's app should change (``explain --fix``), learned over a trace."""

    family: str
    requests: int = 0
    rewritten: int = 0
    moves: tuple[str, ...] = ()
    sort_tools: bool = False
    normalise: bool = False

    def edits(self) -> list[str]:
        out = []
        if self.moves:
            shown = ", ".join(f"'{m}'" for m in self.moves[:6])
            more = f" and {len(self.moves) - 6} more" if len(self.moves) > 6 else ""
            out.append(
                f"move these lines after the static text (they change per request): {shown}{more}"
            )
        if self.sort_tools:
            out.append("sort the tools list by function name (it comes in a set's order)")
        if self.normalise:
            out.append("send \\n line ends and no trailing spaces (they vary between clients)")
        return out


def stabilize_trace(
    records: Sequence[Any], min_gain_chars: int = 512
) -> tuple[list[Any], dict[str, FamilyFix]]:
    """The trace as the gateway's stabilizer (``on``) would have sent it (records whose
    messages changed lose their token ids), and per family what moved."""
    from dataclasses import replace

    learner = Stabilizer(min_gain_chars=min_gain_chars)
    out: list[TraceRecord] = []
    fixes: dict[str, FamilyFix] = {}
    for record in records:
        rewrite = learner.process(
            record.cache_salt or "", list(record.messages), None, record.agent
        )
        fix = fixes.get(rewrite.family, FamilyFix(rewrite.family))
        fix = replace(fix, requests=fix.requests + 1)
        if rewrite.rewritten and rewrite.plan is not None:
            plan = rewrite.plan
            moves = tuple(dict.fromkeys((*fix.moves, *plan.shapes)))
            fix = replace(
                fix,
                rewritten=fix.rewritten + 1,
                moves=moves,
                sort_tools=fix.sort_tools or plan.sort_tools,
                normalise=fix.normalise or bool(plan.normalise),
            )
            out.append(replace(record, messages=tuple(rewrite.messages), prompt_token_ids=None))
        else:
            out.append(record)
        fixes[rewrite.family] = fix
    return out, fixes


def stabilized_rates(
    records: Sequence[TraceRecord],
    tokens: Sequence[list[int]],
    block_size: int,
    tokenizer: ChatTokenizer | None,
) -> tuple[dict[str, float | None], dict[str, FamilyFix]]:
    """Per family: the hit rate had the gateway's stabilizer sent the trace, and what it
    moved (no figure when a rewritten request cannot be tokenized: the trace carries its
    own token ids, or no tokenizer is at hand)."""
    stable, fixes = stabilize_trace(records, block_size * CHARS_PER_TOKEN)
    changed = [i for i, (a, b) in enumerate(zip(records, stable, strict=True)) if a is not b]
    if not changed:
        return {}, fixes
    if tokenizer is None or any(r.prompt_token_ids is not None for r in records):
        return {}, fixes
    encoded = tokenizer.encode_chats([stable[i].messages for i in changed])
    stable_tokens = [list(t) for t in tokens]
    for i, ids in zip(changed, encoded, strict=True):
        stable_tokens[i] = ids
    report = explain(stable, stable_tokens, block_size)
    return {f.family: f.hit_rate for f in report.families}, fixes
