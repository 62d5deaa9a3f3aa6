"""Bad or unexpected input to the prompt library: a typed error naming the culprit, or
correct and deterministic output. Never a raw traceback, a hang or a silent wrong prompt."""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
import subprocess
import sys
import time
import uuid
import warnings
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from prefixcache import (
    ConfigError,
    PrefixCacheError,
    PromptLibrary,
    PromptRenderError,
    Settings,
    UnknownAgentWarning,
    compose_prompt,
)
from prefixcache.cli.app import app
from prefixcache.errors import PromptFileError, PromptInputError, PromptInputTypeError
from prefixcache.prompts.compose import PREFIX_MEMO_SIZE
from prefixcache.prompts.inputs import MAX_DEPTH
from prefixcache.prompts.lint import NothingToLintError, lint_paths, lint_text
from prefixcache.prompts.registry import PromptRegistry

BASE = "default.agent.system.main"
runner = CliRunner()


def suffix(**kwargs: Any) -> str:
    return compose_prompt(BASE, **kwargs).suffix


# -- dynamic inputs: accepted types render identically; the rest is a typed error -------


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"available_tools": b"file_read"}, PromptInputTypeError, "available_tools"),
        ({"available_tools": [b"file_read"]}, PromptInputTypeError, "available_tools[0]"),
        ({"available_tools": [1, 2]}, PromptInputTypeError, "available_tools[0]"),
        ({"available_tools": 42}, PromptInputTypeError, "available_tools"),
        ({"available_tools": {"a": 1}}, PromptInputTypeError, "available_tools"),
        ({"session_id": object()}, PromptInputTypeError, "session_id"),
        ({"session_id": 1.5}, PromptInputTypeError, "session_id"),
        ({"user_name": ["Alice"]}, PromptInputTypeError, "user_name"),
        ({"user_role": b"admin"}, PromptInputTypeError, "user_role"),
        ({"recent_context": 12}, PromptInputTypeError, "recent_context"),
        ({"recent_context": b"hi"}, PromptInputTypeError, "recent_context"),
        ({"recent_context": [object()]}, PromptInputTypeError, "recent_context[0]"),
        ({"recent_context": [{"role": "user"}]}, PromptInputError, "recent_context[0]"),
        ({"additional_params": ["a", "b"]}, PromptInputTypeError, "additional_params"),
        ({"additional_params": {1: "x"}}, PromptInputTypeError, "additional_params keys"),
        ({"additional_params": {"k": object()}}, PromptInputTypeError, "additional_params['k']"),
        ({"additional_params": {"k": {1: 2}}}, PromptInputTypeError, "additional_params['k']"),
        ({"additional_params": {"k": float("nan")}}, PromptInputError, "additional_params['k']"),
        ({"additional_params": {"k": float("inf")}}, PromptInputError, "finite"),
        ({"additional_params": {"k": Decimal("NaN")}}, PromptInputError, "finite"),
        ({"additional_params": {"a\nb": 1, "a b": 2}}, PromptInputError, "both render"),
        ({"clock": "week"}, PromptInputError, "clock must be one of"),
        ({"clock": "date", "now": "2025-01-01"}, PromptInputTypeError, "now must be a datetime"),
        ({"agent_type": 7}, PromptInputTypeError, "agent_type"),
    ],
)
def test_bad_dynamic_inputs_are_typed_errors_naming_the_parameter(
    kwargs: dict[str, Any], error: type[Exception], names: str
) -> None:
    with pytest.raises(error) as info:
        compose_prompt(BASE, **kwargs)
    assert names in str(info.value)
    assert isinstance(info.value, PrefixCacheError)
    if error is PromptInputTypeError:
        assert isinstance(info.value, TypeError)  # the Python convention for a wrong type
    else:
        assert isinstance(info.value, ValueError)


def test_cycles_and_deep_nesting_are_clear_errors() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(PromptInputError, match="contains itself"):
        compose_prompt(BASE, additional_params={"c": cycle})
    deep: Any = "x"
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(PromptInputError, match=f"more than {MAX_DEPTH} levels"):
        compose_prompt(BASE, additional_params={"d": deep})
    very_deep: Any = "x"
    for _ in range(5000):  # once a RecursionError
        very_deep = {"k": very_deep}
    with pytest.raises(PromptInputError):
        compose_prompt(BASE, additional_params={"d": very_deep})


def test_a_single_message_keeps_its_text() -> None:
    """recent_context={"role": "user", "content": "hi"} once lost the message text."""
    assert "> user: hi" in suffix(recent_context={"role": "user", "content": "hi"}).splitlines()
    parts = {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url"}]}
    assert "> user: look [image_url]" in suffix(recent_context=[parts]).splitlines()


def test_none_items_are_left_out_not_printed() -> None:
    text = suffix(available_tools=["b", None, "a"], recent_context=["x", None, "y"])
    assert "None" not in text
    assert "**Available Tools:** a, b" in text and "> x\n> y" in text


class Colour(enum.Enum):
    RED = "red"


def test_rich_parameter_values_render_stably() -> None:
    when = dt.datetime(2025, 4, 29, 18, 25, tzinfo=dt.UTC)
    text = suffix(
        additional_params={
            "when": when,
            "day": dt.date(2025, 4, 29),
            "id": uuid.UUID(int=1),
            "price": Decimal("9.90"),
            "colour": Colour.RED,
            "path": Path("/srv/app"),
            "tags": {"b", "a", "c"},
            "nested": {"z": [1, 2.5, True, None], "a": frozenset({3, 1})},
        }
    )
    assert "- when: 2025-04-29T18:25:00+00:00" in text
    assert "- day: 2025-04-29" in text and "- price: 9.90" in text and "- colour: red" in text
    assert "- id: 00000000-0000-0000-0000-000000000001" in text and "- path: /srv/app" in text
    assert '- tags: ["a", "b", "c"]' in text
    assert '- nested: {"a": [1, 3], "z": [1, 2.5, true, null]}' in text
    assert " at 0x" not in text  # no memory addresses


def test_ints_and_uuids_as_ids() -> None:
    text = suffix(session_id=42, user_name="Ann", user_role=uuid.UUID(int=2))
    assert (
        "**Session:** 42" in text and "**User Role:** 00000000-0000-0000-0000-000000000002" in text
    )


_SEED_SCRIPT = """
import json, sys
from prefixcache import compose_prompt
inputs = json.loads(sys.argv[1])
for item in inputs:
    params = item["additional_params"]
    params["as_set"] = set(params.pop("as_list"))
    params["as_frozen"] = frozenset(tuple(x) for x in params.pop("pairs"))
    print(compose_prompt("default.agent.system.main", **item).suffix.encode().hex())
"""


@settings(max_examples=4, deadline=None)
@given(
    samples=st.lists(
        st.fixed_dictionaries(
            {
                "available_tools": st.frozensets(st.text(max_size=8), max_size=6).map(list),
                "additional_params": st.fixed_dictionaries(
                    {
                        "as_list": st.lists(st.text(max_size=6) | st.integers(), max_size=6),
                        "pairs": st.lists(
                            st.tuples(st.text(max_size=3), st.integers()), max_size=4
                        ),
                    }
                ),
            }
        ),
        min_size=2,
        max_size=10,
    )
)
def test_output_is_identical_under_every_hash_seed(samples: list[dict[str, Any]]) -> None:
    """Two workers with different PYTHONHASHSEEDs must build byte-identical prompts.
    (Each example starts three interpreters, at once: few examples of many samples.)"""
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _SEED_SCRIPT, json.dumps(samples)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONHASHSEED=seed),
        )
        for seed in ("0", "1", "12345")
    ]
    outputs = set()
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        outputs.add(out)
    assert len(outputs) == 1


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=150, deadline=None)
@given(params=st.dictionaries(st.text(max_size=8), json_values, max_size=5), ctx=json_values)
def test_arbitrary_json_inputs_render_or_raise_only_documented_errors(
    params: dict[str, Any], ctx: Any
) -> None:
    try:
        prompt = compose_prompt(BASE, additional_params=params, recent_context=ctx)
    except PromptInputError:
        return  # a documented, typed error naming the parameter
    body = prompt.suffix.splitlines()
    assert body.count("**Session:**") == 0
    for line in body:  # nothing forged a label: params are "- k: v", context is fenced
        assert not line.startswith("**Recent Context:**") or line == "**Recent Context:**"


# -- memory: memoise by what the prefix is made of, with a bound -----------------------


def test_unknown_agent_names_share_one_memoised_prefix(library: PromptLibrary) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownAgentWarning)
        for i in range(2000):
            library.compose_prompt(agent_type=f"made-up-agent-{i}")
    memo = library.composer._prefixes
    assert len(memo) == 1  # every unknown agent is tier 1 without a role: one prefix
    assert len(library.tiers._warned) <= 256


def test_the_prefix_memo_is_bounded(library: PromptLibrary, tmp_path: Path) -> None:
    for i in range(PREFIX_MEMO_SIZE + 20):
        (tmp_path / "x").mkdir(exist_ok=True)
        (tmp_path / "x" / f"p{i}.md").write_text(f"Prompt {i}\n")
    lib = PromptLibrary(Settings(prompt_dirs=(tmp_path,)))
    for i in range(PREFIX_MEMO_SIZE + 20):
        lib.compose_prompt(f"x.p{i}")
    assert len(lib.composer._prefixes) == PREFIX_MEMO_SIZE


# -- prompt folders --------------------------------------------------------------------


@pytest.fixture
def messy_dir(tmp_path: Path) -> Path:
    root = tmp_path / "prompts"
    (root / "good").mkdir(parents=True)
    (root / "good" / "fine.md").write_text("Fine.\n")
    (root / "good" / "folder.md").mkdir()  # a folder named x.md
    (root / "good" / "latin1.md").write_bytes("caf\xe9\n".encode("latin-1"))
    (root / "good" / "dangling.md").symlink_to(root / "nowhere.md")
    (root / "good" / "loop.md").symlink_to(root / "good" / "loop.md")
    (root / "loopdir").symlink_to(root / "loopdir")
    os.mkfifo(root / "good" / "pipe.md")
    return root


def test_registry_lists_the_good_and_names_the_bad(messy_dir: Path) -> None:
    registry = PromptRegistry([messy_dir], include_builtin=False)
    assert registry.keys() == ["good.fine"]
    problems = {Path(str(p.path)).name: p.problem for p in registry.problems()}
    assert "is a folder" in problems["folder.md"]
    assert "not UTF-8" in problems["latin1.md"]
    assert problems["dangling.md"] == "is a dangling symlink"
    assert problems["loop.md"] == "is a symlink loop"
    assert "not a regular file" in problems["pipe.md"]
    assert problems["loopdir"] == "is a symlink loop"


def test_reading_a_bad_file_is_a_typed_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "bad.md").write_bytes(b"\xff\xfe{\x00{\x00")
    registry = PromptRegistry([tmp_path], include_builtin=False)
    with pytest.raises(PromptFileError, match=r"bad\.md: is not UTF-8"):
        registry.render("x.bad")


def test_prompts_list_lists_everything_else_and_exits_1(messy_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"prompts: {{directories: ['{messy_dir}', '{tmp_path / 'missing'}']}}\n")
    result = runner.invoke(app, ["--config", str(config), "prompts", "list"])
    assert result.exit_code == 1
    assert "good.fine\t" in result.stdout and "default.agent.system.main\t" in result.stdout
    assert "folder.md: is a folder" in result.stderr
    assert f"{tmp_path / 'missing'}: prompt directory does not exist" in result.stderr
    assert "Traceback" not in result.output


def test_a_missing_configured_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"prompts\.directories .*missing does not exist"):
        PromptLibrary(Settings(prompt_dirs=(tmp_path / "missing",)))


def test_a_layered_suffix_template_gets_the_guides_variables(tmp_path: Path) -> None:
    """A real collection overrides default.agent.system.dynamic_context with the guide's
    variable names: it renders, and an unknown variable is a PromptRenderError naming
    the file and the variable."""
    (tmp_path / "default").mkdir()
    path = tmp_path / "default" / "agent.system.dynamic_context.md"
    path.write_text(
        "- Session ID: {{ session_id }}\n- Date: {{ current_date }}\n"
        "{{ available_tools | join(', ') }}\n"
        "{% for k, v in additional_params.items() %}- {{ k }}: {{ v }}\n{% endfor %}"
    )
    lib = PromptLibrary(Settings(prompt_dirs=(tmp_path,)))
    text = lib.compose_prompt(
        BASE, session_id="s1", available_tools=["b", "a"], additional_params={"p": 1}
    ).suffix
    assert "- Session ID: s1\n- Date: \na, b\n- p: 1\n" in text
    path.write_text("{{ workspace_root }}\n")
    lib = PromptLibrary(Settings(prompt_dirs=(tmp_path,)))
    with pytest.raises(PromptRenderError) as info:
        lib.compose_prompt(BASE)
    message = str(info.value)
    assert str(path) in message and "workspace_root" in message and "session_id" in message


def test_the_real_collection_composes(library: PromptLibrary) -> None:
    """The guide's platform's own prompts, layered before ours."""
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "autobot-prompts" / "current"
    if not shared.is_dir():
        pytest.skip("the shared prompt collection is not beside this checkout")
    lib = PromptLibrary(Settings(prompt_dirs=(shared,)))
    prompt = lib.compose_prompt(agent_type="frontend-engineer", session_id="s", user_name="A")
    assert "Session ID: s" in prompt.suffix and prompt.prefix


# -- lint ------------------------------------------------------------------------------


def test_lint_reports_files_it_cannot_read(messy_dir: Path) -> None:
    findings = lint_paths([messy_dir])
    by_file = {Path(f.path).name: f for f in findings if f.rule == "unreadable"}
    assert set(by_file) >= {"latin1.md", "dangling.md", "loop.md", "pipe.md", "folder.md"}
    assert all(f.line == 0 for f in by_file.values())


def test_lint_decodes_utf16_and_still_finds_what_it_holds(tmp_path: Path) -> None:
    path = tmp_path / "u16.md"
    path.write_bytes("Session {{ session_id }} on 2025-04-29\n".encode("utf-16"))
    rules = {f.rule for f in lint_paths([path])}
    assert {"unreadable", "template-variable", "date"} <= rules


def test_lint_flags_binary_files(tmp_path: Path) -> None:
    path = tmp_path / "bin.md"
    path.write_bytes(b"\x00\x01\x02PNG")
    [finding] = lint_paths([path])
    assert finding.rule == "unreadable" and "binary" in finding.text


def test_nothing_to_lint_is_not_clean(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(NothingToLintError, match="Nothing to lint"):
        lint_paths([tmp_path])
    result = runner.invoke(app, ["lint", str(tmp_path)])
    assert result.exit_code == 1 and "Nothing to lint" in result.stderr
    assert "clean" not in result.output


def test_iso_timestamps_are_one_date_finding() -> None:
    findings = lint_text("Last sync 2025-04-29T18:25:00Z by the bot.\n", "f.md")
    assert [(f.rule, f.text) for f in findings] == [("date", "2025-04-29T18:25:00Z")]
    findings = lint_text("Meeting at 18:25 on 29/04/2025\n", "f.md")
    assert {(f.rule, f.text) for f in findings} == {("time", "18:25"), ("date", "29/04/2025")}


def test_lint_stays_linear_on_pathological_lines() -> None:
    """80 KB lines that once took ~50 s each (quadratic backtracking); a generous bound
    that only a quadratic implementation can miss (the figures: benchmarks/bench_lint.py)."""
    lines = ["{{" * 40_000, "a" * 80_000 + "!", "0" * 80_000 + "g", "1:" * 40_000]
    started = time.perf_counter()
    for line in lines:
        lint_text(line + "\n", "p.md")
    assert time.perf_counter() - started < 10


# -- CLI messages ------------------------------------------------------------------------


def test_show_of_a_template_needing_variables_points_at_raw(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "greet.md").write_text("Hello {{ name }}\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"prompts: {{directories: ['{tmp_path}']}}\n")
    result = runner.invoke(app, ["--config", str(config), "prompts", "show", "x.greet"])
    assert result.exit_code == 1
    assert "name" in result.stderr and "prefixcache prompts show --raw x.greet" in result.stderr


def test_unknown_keys_name_the_searched_folders() -> None:
    result = runner.invoke(app, ["prompts", "show", "nodots"])
    assert result.exit_code == 1
    assert "searched" in result.stderr and "prompts/data" in result.stderr
    assert "no directories" not in result.stderr


@pytest.mark.parametrize(
    ("tiers", "fragment"),
    [
        ("{TIER_9: {}}", "Unknown tier 'TIER_9'"),
        ("{TIER_1_DEFAULT: [a, b]}", "agents.tiers.TIER_1_DEFAULT must be a mapping"),
        ("{TIER_1_DEFAULT: {agnets: [x]}}", "unknown key(s) agnets"),
        ("{TIER_1_DEFAULT: {agents: {x: 5}}}", "must be a role prompt key"),
        ("{TIER_1_DEFAULT: {expected_hit_rate: lots}}", "expected_hit_rate must look like"),
        (
            "{TIER_2_ANALYSIS: {agents: {api-reviewer: agents.nope}}}",
            "refers to prompt 'agents.nope'",
        ),
    ],
)
def test_bad_tier_config_is_a_config_error(tmp_path: Path, tiers: str, fragment: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"agents: {{tiers: {tiers}}}\n")
    result = runner.invoke(
        app, ["--config", str(config), "prompts", "show", "tiers.tier_1_default"]
    )
    assert result.exit_code == 1 and fragment in result.stderr, result.output
    assert "Traceback" not in result.output


def test_a_bad_base_url_option_is_a_usage_error() -> None:
    result = runner.invoke(app, ["doctor", "--base-url", "localhost:8000"])
    assert result.exit_code == 2 and "http://" in result.output
