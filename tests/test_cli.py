from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from prefixcache.cli.app import app

runner = CliRunner()


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("lint", "prompts", "analyze-prompts"):
        assert command in result.output


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
        "--config", "c.yaml", "lint", "x.md",
    ]  # fmt: skip
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
