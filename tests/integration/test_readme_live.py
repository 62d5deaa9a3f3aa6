"""The usage guide's "Talking to vLLM" snippet runs as written against the real engine."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import yaml

from prefixcache import set_default_library
from prefixcache.engine.local import LocalEngine

from ..test_readme import USAGE, section_snippets
from .service_process import COMPACT_PROMPTS

pytestmark = pytest.mark.integration


def test_talking_to_vllm_snippet(
    engine: LocalEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "llm": {"vllm": {"base_url": engine.base_url}},
                "prompts": {"directories": [str(COMPACT_PROMPTS)]},
            }
        )
    )
    monkeypatch.setenv("PREFIXCACHE_CONFIG", str(config))
    set_default_library(None)
    [snippet] = section_snippets("Talking to vLLM")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(snippet, str(USAGE), "exec"), {})
    first, second = [line.split() for line in out.getvalue().splitlines()]
    assert int(second[1]) >= int(first[0]) - 256  # the second request reuses the prefix
    assert int(first[1]) in (0, int(second[1]))  # cold, or warm from an earlier identical run
