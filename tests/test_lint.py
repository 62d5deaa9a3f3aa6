from __future__ import annotations

from pathlib import Path

import pytest

from prefixcache.prompts.lint import lint_paths, lint_text
from prefixcache.prompts.registry import BUILTIN_PROMPT_DIR


def rules(text: str) -> list[str]:
    return [f.rule for f in lint_text(text, "p.md")]


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("Hello {{ user }}\n", "template-variable"),
        ("{{ now() }}\n", "volatile-call"),
        ("{% set x = random() %}\n", "volatile-call"),
        ("Released 2025-10-27.\n", "date"),
        ("Last updated Oct 27, 2025\n", "date"),
        ("Generated at 14:05:09\n", "time"),
        ("Request 123e4567-e89b-12d3-a456-426614174000\n", "uuid"),
        ("Build 9f86d081884c7d659a2feaa0c55ad015\n", "hex-id"),
        ("Today you will review code.\n", "volatile-phrase"),
        ("Use the current time when logging.\n", "volatile-phrase"),
        ("Trailing spaces   \n", "trailing-whitespace"),
        ("one\r\ntwo\n", "mixed-line-endings"),
        ("one\ntwo\rthree\n", "mixed-line-endings"),  # a lone \r: once a StopIteration
        ("one\rtwo\r\n", "mixed-line-endings"),
    ],
)
def test_each_rule_fires(text: str, rule: str) -> None:
    assert rule in rules(text)


def test_clean_text_has_no_findings() -> None:
    assert rules("# Role\n\nYou review code carefully.\nUse UTF-8 and Python 3.11.\n") == []


def test_findings_print_as_file_line_rule_text(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b.md").write_text("ok\nToday is nice\n")
    (tmp_path / "a" / "x.dynamic_context.md").write_text("{{ session_id }}\n")  # skipped
    findings = lint_paths([tmp_path])
    assert [str(f) for f in findings] == [
        f"{tmp_path}/a/b.md:2: volatile-phrase: 'Today' implies text that changes over time"
    ]


def test_builtin_prompts_pass() -> None:
    assert lint_paths([BUILTIN_PROMPT_DIR]) == []


def test_llama3_chat_template_preamble_is_flagged() -> None:
    from prefixcache.diagnostics.chat_template import volatile_text_problems

    # what a Llama 3.x chat template renders before the system prompt
    preamble = (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
    )
    problems = volatile_text_problems(preamble)
    assert any(p.startswith("date: 26 Jul 2024") for p in problems)
    assert any(p.startswith("volatile-phrase") for p in problems)
    assert volatile_text_problems("<|im_start|>system\n") == []
