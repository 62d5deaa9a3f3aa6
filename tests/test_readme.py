"""The README's quick-start snippets run as written (the usage guide's live ones run in
``integration/test_readme_live.py``)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
USAGE = Path(__file__).resolve().parents[1] / "docs" / "usage.md"


def quick_start_snippets() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_quick_start_snippets_run() -> None:
    snippets = quick_start_snippets()
    assert len(snippets) >= 3
    for snippet in snippets:
        exec(compile(snippet, str(README), "exec"), {})


def section_snippets(heading: str, doc: Path = USAGE) -> list[str]:
    text = doc.read_text(encoding="utf-8")
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
