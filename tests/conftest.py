"""Shared fixtures. Tests that need an LLM use the real embedded vLLM engine (see
``tests/integration/conftest.py``); nothing here is mocked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from prefixcache import PromptLibrary, Settings, set_default_library


@pytest.fixture
def library() -> PromptLibrary:
    """A library with the built-in prompts only, independent of any config file."""
    return PromptLibrary(Settings())


@pytest.fixture(autouse=True)
def _isolated_default_library() -> Iterator[None]:
    """Each test starts with a fresh default library (no memoised state leaks between tests)."""
    set_default_library(None)
    yield
    set_default_library(None)


@pytest.fixture
def user_prompt_dir(tmp_path: Path) -> Path:
    """A user prompt directory that overrides one built-in prompt and adds one."""
    (tmp_path / "default").mkdir()
    (tmp_path / "custom").mkdir()
    (tmp_path / "default" / "agent.system.main.tips.md").write_text("# Tips\n\nUser tips.\n")
    (tmp_path / "custom" / "greeting.md").write_text("Hello {{ name }}!\n")
    return tmp_path
