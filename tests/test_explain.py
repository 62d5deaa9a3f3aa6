"""``explain`` on crafted traces: the break's position and cause, per cause, and what is
not a break. Token ids here are the characters' code points (given in the trace, as a
trace may carry its own ids); tests/integration/test_explain_live.py runs the same cases
through a real vLLM server's tokenizer."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prefixcache.cli.app import app
from prefixcache.traces.explain import explain, realigned_tokens
from prefixcache.traces.records import TraceRecord, write_trace
from prefixcache.traces.render import explain_markdown

from .explain_cases import CASES, STATIC, Case

BLOCK = 16


def _ids(record: TraceRecord) -> list[int]:
    """Character code points of the messages, with a marker per message (a 'template')."""
    out: list[int] = []
    for m in record.messages:
        out += [1, *map(ord, str(m["content"])), 2]
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.cause)
def test_each_cause_is_found_where_it_is(case: Case) -> None:
    records = case.records()
    report = explain(records, [_ids(r) for r in records], BLOCK)
    (brk,) = report.breaks
    assert brk.cause.value == case.cause
    assert (brk.request, brk.reference, brk.message, brk.char) == (1, 0, 0, case.char)
    assert brk.token == case.char + 1  # the message marker comes first
    assert brk.tokens_lost >= len(STATIC) - 2 * BLOCK
    assert report.families[0].causes == {case.cause: 1}
    assert brk.before == case.first[max(0, case.char - 60) : case.char]


def test_appending_a_turn_is_not_a_break() -> None:
    first = TraceRecord(
        messages=({"role": "system", "content": STATIC}, {"role": "user", "content": "one"}),
        agent="a",
    )
    turn = ({"role": "assistant", "content": "ok"}, {"role": "user", "content": "two"})
    second = dataclasses.replace(first, messages=(*first.messages, *turn))
    records = [first, second]
    report = explain(records, [_ids(r) for r in records], BLOCK)
    assert report.breaks == []
    shared = len(_ids(first))  # all of the first request
    assert report.requests[1].shared_tokens == shared
    assert report.requests[1].reusable_tokens == shared // BLOCK * BLOCK


def test_reusable_is_block_aligned_and_never_the_last_token() -> None:
    record = TraceRecord(messages=({"role": "user", "content": "x" * 62},), agent="a")
    ids = _ids(record)  # 64 tokens: 4 full blocks
    report = explain([record, record], [ids, ids], BLOCK)
    assert [r.reusable_tokens for r in report.requests] == [0, 48]
    assert report.breaks == []


def test_the_first_of_an_agent_breaks_against_another_agent_sharing_its_layers() -> None:
    """A naive layout: each agent's dynamic context first, then base layers all agents
    share. The first request of agent b has no earlier b, but lost the shared layers."""
    a = TraceRecord(messages=({"role": "system", "content": f"User: Alice\n{STATIC}"},), agent="a")
    b = TraceRecord(messages=({"role": "system", "content": f"User: Bob\n{STATIC}"},), agent="b")
    report = explain([a, b], [_ids(a), _ids(b)], BLOCK)
    (brk,) = report.breaks
    assert (brk.family, brk.reference_family, brk.cause.value) == ("b", "a", "other")
    assert brk.tokens_lost > len(STATIC) - BLOCK


def test_agents_that_differ_after_shared_layers_are_not_breaks() -> None:
    """The optimized layout: shared base, then each agent's own role, then a suffix that
    happens to be alike. Little realigns: no break for the first request of b."""
    suffix = "## Dynamic Context\nUser: Alice\nTools: file_read, file_write\n" * 2
    a = TraceRecord(
        messages=({"role": "system", "content": STATIC + "Role A. " * 60 + suffix},), agent="a"
    )
    b = TraceRecord(
        messages=({"role": "system", "content": STATIC + "Role B! " * 60 + suffix},), agent="b"
    )
    report = explain([a, b], [_ids(a), _ids(b)], BLOCK)
    assert report.breaks == []
    assert report.requests[1].reusable_tokens >= len(STATIC) - BLOCK


def test_salts_do_not_share() -> None:
    case = CASES[0]
    a, b = case.records()
    b = dataclasses.replace(b, messages=a.messages, cache_salt="tenant-b")
    report = explain([a, b], [_ids(a), _ids(b)], BLOCK)
    assert report.requests[1].reusable_tokens == 0
    assert report.breaks == []  # another salt is another family's cache, not a break


def test_realign_counts_content_after_the_break() -> None:
    ours = [9, 9, *range(100, 200)]
    theirs = [7, *range(100, 200)]
    assert realigned_tokens(ours, theirs, 0) == 100
    assert realigned_tokens(list(range(500, 600)), theirs, 0) == 0


def _separate(cases: list[Case]) -> list[TraceRecord]:
    """Every case's two requests, each case under its own salt (they share STATIC)."""
    return [dataclasses.replace(r, cache_salt=c.cause) for c in cases for r in c.records()]


def test_worst_breaks_and_markdown() -> None:
    records = _separate(CASES)
    report = explain(records, [_ids(r) for r in records], BLOCK)
    assert len(report.breaks) == len(CASES)
    worst = report.worst(3)
    assert [b.tokens_lost for b in worst] == sorted((b.tokens_lost for b in worst), reverse=True)
    text = explain_markdown(report)
    for case in CASES:
        assert f"case-{case.cause}" in text
    data = report.to_json()
    assert data["tokens_lost"] == sum(b.tokens_lost for b in report.breaks)
    assert set(data["causes"]) == {c.cause for c in CASES}


def test_cli_json_markdown_and_fail_under(tmp_path: Path) -> None:
    records = [dataclasses.replace(r, prompt_token_ids=tuple(_ids(r))) for r in _separate(CASES)]
    records += [records[1], records[1]]  # two repeats: reusable about 14% of the tokens
    trace = tmp_path / "trace.jsonl"
    with trace.open("w") as out:
        write_trace(records, out)
    runner = CliRunner()
    base = ["explain", str(trace), "--block-size", "16"]
    result = runner.invoke(app, [*base, "--format", "json", "--out", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["requests"] == len(records) and len(data["worst_breaks"]) == len(CASES)
    result = runner.invoke(app, [*base, "--format", "markdown"])
    assert result.exit_code == 0 and "Worst breaks" in result.output
    assert 0.10 < data["hit_rate"] < 0.20
    result = runner.invoke(app, [*base, "--fail-under", "20"])
    assert result.exit_code == 1
    assert "under --fail-under 20%" in result.output
    assert runner.invoke(app, [*base, "--fail-under", "10"]).exit_code == 0
    result = runner.invoke(app, [*base, "--label", "arm"])
    assert result.exit_code == 2
    result = runner.invoke(app, [*base, "--label", "arm=naive"])
    assert result.exit_code == 1 and "No record of the trace has the labels" in result.output


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.cause)
def test_without_agent_labels_the_longest_line_makes_the_family(case: Case) -> None:
    a, b = case.records()
    other = TraceRecord(messages=({"role": "system", "content": "Another prompt. " * 40},))
    records = [dataclasses.replace(r, agent=None) for r in (a, other, b)]
    report = explain(records, [_ids(r) for r in records], BLOCK)
    (brk,) = report.breaks  # b is compared with a, not with the later `other`
    assert (brk.request, brk.reference, brk.cause.value) == (2, 0, case.cause)
    assert len(report.families) == 2
    assert all(f.family.startswith("[system ") for f in report.families)


def test_a_timestamp_in_the_longest_line_keeps_one_family() -> None:
    lines = [f"{STATIC} Now: 2026-11-27T10:0{n}:00Z" for n in (1, 2)]
    records = [TraceRecord(messages=({"role": "system", "content": x},)) for x in lines]
    report = explain(records, [_ids(r) for r in records], BLOCK)
    assert len(report.families) == 1


def test_cli_names_a_missing_tokenizer(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    with trace.open("w") as out:
        write_trace(CASES[0].records(), out)  # no token ids: a tokenizer is needed
    result = CliRunner().invoke(app, ["explain", str(trace), "--tokenizer", str(tmp_path / "no")])
    assert result.exit_code == 1
    assert "is not a model folder" in result.output and "--base-url" in result.output


def test_two_tenants_families_stay_apart_and_read_apart() -> None:
    """The same app under two salts: two rows, each named with its salt; an unlabelled
    family's ``[system ...]`` tag survives the terminal table (rich markup), and the
    changed text's newlines are escaped once."""
    from rich.console import Console

    from prefixcache.cli import explain as explain_cli
    from prefixcache.traces.render import break_lines

    texts = [f"Now: 10:00:0{i}\n{STATIC}" for i in range(4)]
    records = [
        TraceRecord(messages=({"role": "system", "content": t},), cache_salt=salt)
        for t, salt in zip(texts, ["tenant-a", "tenant-b", "tenant-a", "tenant-b"], strict=True)
    ]
    report = explain(records, [_ids(r) for r in records], BLOCK)
    names = sorted(f.family for f in report.families)
    assert len(names) == 2 and names[0].endswith("@tenant-a") and names[1].endswith("@tenant-b")
    assert all(f.requests == 2 and f.breaks == 1 for f in report.families)
    assert all(b.family == b.reference_family for b in report.breaks)
    console = Console(record=True, width=200)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(explain_cli, "console", console)
        explain_cli._print_explain(report, 2)
    shown = console.export_text()
    assert all(name.split("]")[0] in shown for name in names)  # "[system 1a2b3c" shown
    brk = dataclasses.replace(report.breaks[0], ours="a\nb", theirs="c\nd")
    changed = next(line for line in break_lines(brk) if line.startswith("changed:"))
    assert changed == "changed: 'a\\nb' vs 'c\\nd'"


def test_fix_names_the_edit_and_the_stabilizer_reaches_the_fixed_rate(tmp_path: Path) -> None:
    """`explain --fix`: the line to move, per family; with a tokenizer (here: code points,
    as the trace's own ids), the hit rate the gateway's stabilizer would reach."""
    from prefixcache.traces.stabilize import stabilize_trace

    texts = [f"Now: 2026-11-30 10:00:0{i}\n{STATIC}" for i in range(5)]
    records = [
        TraceRecord(messages=({"role": "system", "content": t},), agent="bot") for t in texts
    ]
    stable, fixes = stabilize_trace(records, min_gain_chars=64)
    assert [r is s for r, s in zip(records, stable, strict=True)] == [
        True,
        False,
        False,
        False,
        False,
    ]
    assert fixes["bot"].moves == ("Now: #-#-# #:#:#",) and fixes["bot"].rewritten == 4
    stable_report = explain(stable, [_ids(r) for r in stable], BLOCK)
    report = explain(records, [_ids(r) for r in records], BLOCK)
    assert (
        report.families[0].hit_rate is not None and stable_report.families[0].hit_rate is not None
    )
    assert stable_report.families[0].hit_rate > 0.5 > report.families[0].hit_rate
    trace = tmp_path / "trace.jsonl"
    with trace.open("w") as out:
        write_trace([dataclasses.replace(r, prompt_token_ids=tuple(_ids(r))) for r in records], out)
    result = CliRunner().invoke(app, ["explain", str(trace), "--block-size", "16", "--fix"])
    assert result.exit_code == 0, result.output
    assert "fix: move these lines after the static text" in result.output
    assert "'Now: #-#-# #:#:#'" in result.output
