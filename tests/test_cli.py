from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from prefixcache._cli import app

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
    assert result.exit_code != 0
    assert "default.agent.system.main" in str(result.exception)


def test_analyze_prompts_reports_layers() -> None:
    result = runner.invoke(app, ["analyze-prompts", "--agent", "code-reviewer"])
    assert result.exit_code == 0
    assert "code-reviewer" in result.stdout and "2 analysis" in result.stdout
