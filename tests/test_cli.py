from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from prefixcache.cli.app import app

runner = CliRunner()


def test_help_lists_commands() -> None:
    """Every registered command and group is listed by name (a whole word in the
    commands table, not a part of another command's name)."""
    import re

    result = runner.invoke(app, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    listed = set(re.findall(r"^│ ([a-z][a-z-]*) ", result.output, flags=re.MULTILINE))
    registered = {c.name for c in app.registered_commands if c.name} | {
        g.name for g in app.registered_groups if g.name
    }
    registered |= {
        c.callback.__name__.replace("_", "-")
        for c in app.registered_commands
        if c.name is None and c.callback is not None
    }
    assert {"lint", "prompts", "analyze-prompts", "explain", "serve", "keys"} <= registered
    assert listed == registered, listed ^ registered


def test_lint_exit_codes(tmp_path: Path) -> None:
    assert runner.invoke(app, ["lint"]).exit_code == 0
    bad = tmp_path / "bad.md"
    bad.write_text("Session {{ session_id }} started today\n")
    result = runner.invoke(app, ["lint", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:1: template-variable:" in result.stdout
    assert runner.invoke(app, ["lint", str(tmp_path / "nope")]).exit_code == 2


def test_prompts_list_and_show() -> None:
    listing = runner.invoke(app, ["prompts", "list"])
    assert listing.exit_code == 0 and "orchestrator.system_prompt\t" in listing.stdout
    shown = runner.invoke(app, ["prompts", "show", "tiers.tier_1_default"])
    assert shown.exit_code == 0 and shown.stdout.startswith("# Default Engineering Agents")
    raw = runner.invoke(app, ["prompts", "show", "--raw", "default.agent.system.main"])
    assert "{% include" in raw.stdout


def test_prompts_show_unknown_key_is_a_clear_error() -> None:
    result = runner.invoke(app, ["prompts", "show", "default.agent.system.mian"])
    assert result.exit_code == 1  # a runtime failure, not a usage error
    assert "error: Unknown prompt key 'default.agent.system.mian'" in result.stderr
    assert "default.agent.system.main" in result.stderr


def test_analyze_prompts_reports_layers() -> None:
    result = runner.invoke(app, ["analyze-prompts", "--agent", "code-reviewer"])
    assert result.exit_code == 0
    assert "code-reviewer" in result.stdout and "2 analysis" in result.stdout


def test_config_may_come_before_or_after_the_command(tmp_path: Path) -> None:
    from prefixcache.cli.app import hoist_config

    assert hoist_config(["lint", "--config", "c.yaml", "x.md"]) == [
        "--config",
        "c.yaml",
        "lint",
        "x.md",
    ]
    assert hoist_config(["--config=c.yaml", "lint"]) == ["--config=c.yaml", "lint"]
    assert hoist_config(["lint", "--", "--config"]) == ["lint", "--", "--config"]
    config = tmp_path / "c.yaml"
    config.write_text("llm: {vllm: {port: abc}}\n")
    result = runner.invoke(app, ["--config", str(config), "engine", "status"])
    assert result.exit_code == 1  # a bad config is a runtime error, named
    assert f"llm.vllm.port in {config}" in result.stderr


def test_usage_errors_exit_2() -> None:
    assert runner.invoke(app, ["bench", "--scenario", "nope"]).exit_code == 2
    assert runner.invoke(app, ["bench", "--sweep", "a,b"]).exit_code == 2
    assert runner.invoke(app, ["engine", "start", "--port", "0"]).exit_code == 2
    assert runner.invoke(app, ["no-such-command"]).exit_code == 2
