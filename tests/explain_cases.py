"""Crafted traces, one per cause of a cache break: shared by the unit tests (token ids
given per character) and the live tests (the server's tokenizer)."""

from __future__ import annotations

from dataclasses import dataclass

from prefixcache.traces.records import TraceRecord

#: the static text every request of a case shares (long enough to span many blocks)
STATIC = (
    "You are the code reviewer of a large platform. Review each change for correctness, "
    "security, performance and readability; cite the file and line of each finding; "
    "never invent a file. "
) * 12


@dataclass(frozen=True)
class Case:
    cause: str
    #: the system prompt of the two requests; the break is at the first differing char
    first: str
    second: str

    def records(self) -> list[TraceRecord]:
        return [
            TraceRecord(
                messages=(
                    {"role": "system", "content": text},
                    {"role": "user", "content": f"Review change {n}."},
                ),
                agent=f"case-{self.cause}",
                line=n,
            )
            for n, text in ((1, self.first), (2, self.second))
        ]

    @property
    def char(self) -> int:
        n = 0
        while self.first[n] == self.second[n]:
            n += 1
        return n


CASES = [
    Case(
        "date-time",
        f"Current time: 2026-11-27T10:00:01Z\n{STATIC}",
        f"Current time: 2026-11-27T10:04:39Z\n{STATIC}",
    ),
    Case(
        "id",
        f"Session: 3f2a9c1e-1111-4d2b-9c3e-0123456789ab\n{STATIC}",
        f"Session: 7b1d0e2f-2222-4d2b-9c3e-0123456789ab\n{STATIC}",
    ),
    Case("number", f"Open tasks: 12\n{STATIC}", f"Open tasks: 7\n{STATIC}"),
    Case(
        "reordered",
        f"Tools: search, file_read, run_tests, git_diff\n{STATIC}",
        f"Tools: git_diff, run_tests, search, file_read\n{STATIC}",
    ),
    Case("whitespace", f"Rules:\r\n{STATIC}", f"Rules:\n{STATIC}"),
    Case("other", f"User: Alice Martin\n{STATIC}", f"User: Bob Chen\n{STATIC}"),
]
