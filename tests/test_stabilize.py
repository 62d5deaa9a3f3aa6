"""The stabilizer's learning and rewriting (pure logic), with a property test of its
invariants: same messages, same roles, same lines in each rewritten message, same tools."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from prefixcache.traces.stabilize import Stabilizer, allowed_mode, line_shape

POLICY = [
    f"Rule {chr(65 + i)}: always check the {w} before you answer."
    for i, w in enumerate(["inputs", "outputs", "tests", "logs", "docs", "limits", "owners"])
]
STATIC = "\n".join(POLICY * 4)  # about 1,500 characters of instructions


def system(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": text}, {"role": "user", "content": "Hi there"}]


def test_a_timestamp_first_app_gets_its_static_text_first_from_the_second_request() -> None:
    s = Stabilizer()
    texts = [f"Current time: 2026-11-30 14:03:0{i}\n{STATIC}\n" for i in range(3)]
    first = s.process("t", system(texts[0]))
    assert not first.rewritten and first.skipped == "family seen once"
    second, third = s.process("t", system(texts[1])), s.process("t", system(texts[2]))
    for r, text in ((second, texts[1]), (third, texts[2])):
        assert r.rewritten and r.header() == "lines=1; tools=unchanged"
        content = r.messages[0]["content"]
        assert content == f"{STATIC}\n{text.splitlines()[0]}\n"  # moved last, final \n kept
        assert r.messages[1] == {"role": "user", "content": "Hi there"}
    assert second.plan is not None and second.plan.shapes == ("Current time: #-#-# …",)


def test_a_stable_app_is_never_rewritten() -> None:
    s = Stabilizer()
    for n in range(4):
        messages = [*system(STATIC), {"role": "assistant", "content": f"turn {n}"}]
        r = s.process("t", messages)
        assert not r.rewritten and r.messages == messages


def test_tools_in_set_order_are_sorted_with_sorted_keys() -> None:
    def tool(name: str) -> dict[str, Any]:
        return {"type": "function", "function": {"parameters": {"b": 1, "a": 2}, "name": name}}

    s = Stabilizer()
    s.process("t", system(STATIC), [tool("b"), tool("a"), tool("c")])
    r = s.process("t", system(STATIC), [tool("c"), tool("a"), tool("b")])
    assert r.rewritten and r.header() == "lines=0; tools=sorted"
    assert r.tools is not None
    assert [t["function"]["name"] for t in r.tools] == ["a", "b", "c"]
    assert json.dumps(r.tools[0]) == json.dumps(
        {"function": {"name": "a", "parameters": {"a": 2, "b": 1}}, "type": "function"}
    )


def test_line_ends_that_vary_are_normalised() -> None:
    s = Stabilizer()
    s.process("t", system(STATIC.replace("\n", "\r\n")))
    r = s.process("t", system(STATIC))
    r2 = s.process("t", system(STATIC.replace("\n", "\r\n")))
    assert r.rewritten and r2.rewritten
    assert r.messages[0]["content"] == r2.messages[0]["content"] == STATIC


def test_a_one_tool_a_line_list_in_set_order_moves_after_the_static_text() -> None:
    s = Stabilizer()
    orders = [
        ["- search", "- read", "- write"],
        ["- write", "- search", "- read"],
        ["- read", "- write", "- search"],
    ]
    out = [s.process("t", system("Tools:\n" + "\n".join(o) + "\n" + STATIC)) for o in orders]
    heads = [r.messages[0]["content"].split("\n- ")[0] for r in out[1:]]
    assert heads[0] == heads[1] == "Tools:\n" + STATIC  # the same static text first
    assert out[2].rewritten


def test_a_small_gain_is_left_alone_and_families_are_bounded() -> None:
    s = Stabilizer(max_families=3)
    small = [f"Time: {i}\nBe brief." for i in range(2)]
    s.process("t", system(small[0]))
    assert s.process("t", system(small[1])).skipped == "gain under one block"
    for n in range(5):
        s.process("t", system(f"Family {chr(65 + n)}: " + "x" * 300))
    assert len(s) == 3


def test_the_header_only_lowers_the_tenants_mode() -> None:
    assert allowed_mode("on", None) == "on" and allowed_mode("on", "shadow") == "shadow"
    assert allowed_mode("shadow", "on") == "shadow" and allowed_mode("off", "on") == "off"
    assert allowed_mode("on", "OFF") == "off" and allowed_mode("shadow", "bogus") == "shadow"


def test_shapes_never_show_the_text() -> None:
    assert line_shape("Request id: 8f3a9c1e2b7d") == "Request id: #"
    assert (
        line_shape("User: alice@example.com, VIP customer since 2019")
        == "User: alice@example.com, VIP …"
    )


# -- the invariants, over random families -------------------------------------------------

line = st.text(st.characters(codec="utf-8", exclude_characters="\n"), max_size=30)


@st.composite
def requests(draw: st.DrawFn) -> list[tuple[list[dict[str, Any]], list[Any] | None]]:
    static = draw(st.lists(line, min_size=1, max_size=12))
    tool_names = draw(st.lists(st.sampled_from("abcdefg"), unique=True, max_size=5))
    out = []
    for _ in range(draw(st.integers(1, 5))):
        lines = list(static)
        for _ in range(draw(st.integers(0, 3))):  # volatile lines anywhere
            lines.insert(draw(st.integers(0, len(lines))), draw(line))
        end = draw(st.sampled_from(["\n", "\r\n"]))
        text = end.join(lines) + draw(st.sampled_from(["", "\n"]))
        messages: list[dict[str, Any]] = [{"role": "system", "content": text}]
        for _ in range(draw(st.integers(0, 3))):
            role = draw(st.sampled_from(["user", "assistant", "tool", "developer"]))
            messages.append({"role": role, "content": end.join(draw(st.lists(line, max_size=3)))})
        tools = [
            {"type": "function", "function": {"name": n}} for n in draw(st.permutations(tool_names))
        ] or None
        out.append((messages, tools))
    return out


@settings(max_examples=300, deadline=None)
@given(requests(), st.integers(0, 600))
def test_a_rewrite_only_moves_lines_of_system_messages(
    family: list[tuple[list[dict[str, Any]], list[Any] | None]], gain: int
) -> None:
    s = Stabilizer(min_gain_chars=gain)
    for n, (messages, tools) in enumerate(family):
        r = s.process("tenant", messages, tools)
        if n == 0:
            assert not r.rewritten  # never before a family is seen twice
        assert len(r.messages) == len(messages)
        for i, (old, new) in enumerate(zip(messages, r.messages, strict=True)):
            assert old["role"] == new["role"]
            if old["role"] not in ("system", "developer"):
                assert new == old  # user, assistant and tool messages untouched
                continue
            normalised = r.rewritten and r.plan is not None and i in r.plan.normalise
            before = old["content"].split("\n")
            after = new["content"].split("\n")
            if normalised:
                strip = " \t\r\f\v"  # ASCII whitespace at a line's end, \r of \r\n
                before = [x.rstrip(strip) for x in before]
                after = [x.rstrip(strip) for x in after]
            assert Counter(before) == Counter(after)  # the same lines, nothing dropped
        old_tools = sorted(json.dumps(t, sort_keys=True) for t in tools or [])
        new_tools = sorted(json.dumps(t, sort_keys=True) for t in r.tools or [])
        assert old_tools == new_tools
