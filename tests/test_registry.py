from __future__ import annotations

from pathlib import Path

import pytest

from prefixcache import (
    PromptLibrary,
    PromptNotFoundError,
    PromptRegistry,
    PromptRenderError,
    Settings,
    get_prompt,
)
from prefixcache.prompts.registry import key_to_relpath, relpath_to_key


def test_key_maps_to_file() -> None:
    assert key_to_relpath("default.agent.system.main") == "default/agent.system.main.md"
    assert relpath_to_key("default/agent.system.main.md") == "default.agent.system.main"


def test_builtin_main_prompt_is_large_and_composed_from_sections() -> None:
    text = get_prompt("default.agent.system.main")
    assert 17_000 <= len(text) <= 21_000
    for heading in ("# Role", "# Environment", "# Communication", "# Problem Solving", "# Tips"):
        assert heading in text
    assert "{%" not in text and "{{" not in text


def test_builtin_keys_present() -> None:
    keys = PromptRegistry().keys()
    for key in (
        "default.agent.system.main",
        "default.agent.system.dynamic_context",
        "orchestrator.system_prompt",
        "tiers.tier_2_analysis",
        "agents.frontend-engineer",
    ):
        assert key in keys


def test_unknown_key_names_key_and_closest() -> None:
    with pytest.raises(PromptNotFoundError) as info:
        get_prompt("default.agent.system.mian")
    message = str(info.value)
    assert "default.agent.system.mian" in message
    assert "default.agent.system.main" in info.value.suggestions
    assert isinstance(info.value, KeyError)  # catchable as a KeyError too


@pytest.mark.parametrize("key", ["", "nodot", "a/b.c", ".x", "x."])
def test_malformed_key_raises_not_found(key: str) -> None:
    with pytest.raises(PromptNotFoundError):
        PromptRegistry().render(key)


def test_undefined_variable_is_an_error(user_prompt_dir: Path) -> None:
    registry = PromptRegistry([user_prompt_dir])
    assert registry.render("custom.greeting", name="Ada") == "Hello Ada!\n"
    with pytest.raises(PromptRenderError, match="name"):
        registry.render("custom.greeting")


def test_no_html_escaping(user_prompt_dir: Path) -> None:
    registry = PromptRegistry([user_prompt_dir])
    assert registry.render("custom.greeting", name="<b>&</b>") == "Hello <b>&</b>!\n"


def test_syntax_error_and_missing_include_raise(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "syntax.md").write_text("{% if %}\n")
    (tmp_path / "bad" / "include.md").write_text('{% include "bad/missing.md" %}\n')
    registry = PromptRegistry([tmp_path])
    with pytest.raises(PromptRenderError, match="syntax"):
        registry.render("bad.syntax")
    with pytest.raises(PromptRenderError, match="missing"):
        registry.render("bad.include")


def test_layering_user_dir_overrides_builtin(user_prompt_dir: Path) -> None:
    library = PromptLibrary(Settings(prompt_dirs=(user_prompt_dir,)))
    main = library.get_prompt("default.agent.system.main")
    assert "User tips." in main  # the include resolved to the user's override
    assert "# Environment" in main  # the rest still comes from the built-in layer
    visible = library.registry.keys()
    assert "custom.greeting" in visible
    assert library.registry.path_of("default.agent.system.main.tips").is_relative_to(
        user_prompt_dir
    )
