"""Typed settings: the search order, validation errors naming key and source, env overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefixcache import ConfigError, PromptLibrary, Settings, VLLMConfig, load_settings
from prefixcache.settings import ClientSettings, EngineSettings

REPO_CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No PREFIXCACHE_* variable of the caller leaks in; run from an empty folder."""
    import os

    for name in list(os.environ):
        if name.startswith("PREFIXCACHE_") and name != "PREFIXCACHE_HOME":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_repository_config_is_valid() -> None:
    settings = load_settings(REPO_CONFIG)
    assert settings.path == REPO_CONFIG
    assert settings.llm.vllm.port == 8000 and settings.llm.vllm.enable_prefix_caching is True


def test_search_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert load_settings().path is None  # nothing found: built-in defaults
    (tmp_path / "config").mkdir()
    local = write(tmp_path / "config", "llm: {vllm: {port: 8101}}\n", "config.yaml")
    assert load_settings().llm.vllm.port == 8101  # ./config/config.yaml
    env_file = write(tmp_path, "llm: {vllm: {port: 8102}}\n", "env.yaml")
    monkeypatch.setenv("PREFIXCACHE_CONFIG", str(env_file))
    assert load_settings().llm.vllm.port == 8102  # $PREFIXCACHE_CONFIG beats ./config
    given = write(tmp_path, "llm: {vllm: {port: 8103}}\n", "given.yaml")
    assert load_settings(given).llm.vllm.port == 8103  # --config beats both
    assert local.is_file()


def test_missing_files_are_config_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml does not exist \(given with --config\)"):
        load_settings(tmp_path / "nope.yaml")
    monkeypatch.setenv("PREFIXCACHE_CONFIG", str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigError, match=r"PREFIXCACHE_CONFIG=.*gone\.yaml does not name a file"):
        load_settings()


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("llm: {vllm: {port: abc}}", "llm.vllm.port", "valid integer"),
        ("llm: {vllm: {port: 70000}}", "llm.vllm.port", "less than or equal to 65535"),
        ("llm: {vllm: {request_timeout_s: abc}}", "llm.vllm.request_timeout_s", "valid number"),
        ("llm: {vllm: {request_timeout_s: 0}}", "llm.vllm.request_timeout_s", "greater than 0"),
        ("llm: {vllm: {max_retries: -1}}", "llm.vllm.max_retries", "greater than or equal to 0"),
        ("llm: {vllm: {device: tpu}}", "llm.vllm.device", "'cpu', 'cuda' or 'auto'"),
        ("llm: {vllm: {gpu_memory_utilization: 1.5}}", "llm.vllm.gpu_memory_utilization", "1"),
        ("llm: {vllm: {extra_args: [--seed, 0]}}", "llm.vllm.extra_args", "list of strings"),
        ("llm: {vllm: {base_url: localhost:8000}}", "llm.vllm.base_url", "http://"),
        (
            "llm: {vllm: {base_url: 'http://127.0.0.1:80x'}}",
            "llm.vllm.base_url",
            "Invalid port: '80x'",
        ),
        (
            "llm: {vllm: {base_url: 'http://127.0.0.1:99999'}}",
            "llm.vllm.base_url",
            "outside 1-65535",
        ),
        ("llm: {vllm: {base_url: 'http://:8000'}}", "llm.vllm.base_url", "has no host"),
        ("service: {stabilize: sometimes}", "service.stabilize.mode", "'off', 'shadow' or 'on'"),
        ("llm: {vllm: {prot: 1}}", "llm.vllm.prot", "Did you mean port"),
        ("llm: {vllm: [1, 2]}", "llm.vllm", "valid dictionary"),
        ("agents: {strict: maybe}", "agents.strict", "valid boolean"),
        ("agents: {tiers: [a, b]}", "agents.tiers", "valid dictionary"),
        ("prompts: {directories: [null]}", "prompts.directories.0", "path"),
        ("prompts: {directories: my-prompts}", "prompts.directories", "list of paths"),
    ],
)
def test_wrong_values_name_key_and_file(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    path = write(tmp_path, text + "\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert f"{key} in {path}:" in message
    assert fragment in message


def test_stabilize_modes_read_as_yaml_writes_them(tmp_path: Path) -> None:
    """YAML reads an unquoted on/off as true/false: they mean the modes they spell."""
    settings = load_settings(write(tmp_path, "service: {stabilize: on}\n"))
    assert settings.service.stabilize.mode == "on"
    path = write(
        tmp_path, "service:\n  stabilize:\n    mode: off\n    tenants: {a: on, b: shadow}\n"
    )
    stabilize = load_settings(path).service.stabilize
    assert (stabilize.mode, stabilize.mode_for("a"), stabilize.mode_for("b")) == (
        "off",
        "on",
        "shadow",
    )


def test_a_string_false_is_false_not_true(tmp_path: Path) -> None:
    """`strict: "false"` was once read as true (bool of a non-empty string)."""
    assert load_settings(write(tmp_path, 'agents: {strict: "false"}\n')).agents.strict is False
    assert load_settings(write(tmp_path, "agents: {strict: true}\n")).agents.strict is True


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"llm: {vllm: {port: 1}}\n\xff\xfe\n", "is not UTF-8"),
        (b"llm: [unclosed\n", "is not valid YAML"),
        (b"- a\n- b\n", "must be a YAML mapping at the top level"),
    ],
)
def test_unreadable_files_are_config_errors(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=fragment):
        load_settings(path)


def test_environment_overrides_single_fields(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write(tmp_path, "llm: {vllm: {port: 8000}}\nagents: {strict: false}\n")
    monkeypatch.setenv("PREFIXCACHE_LLM__VLLM__BASE_URL", "http://127.0.0.1:9001/")
    monkeypatch.setenv("PREFIXCACHE_LLM__VLLM__PORT", "8200")
    monkeypatch.setenv("PREFIXCACHE_AGENTS__STRICT", "true")
    monkeypatch.setenv("PREFIXCACHE_LLM__VLLM__EXTRA_ARGS", "[--seed, '7']")
    settings = load_settings(path)
    assert settings.llm.vllm.url == "http://127.0.0.1:9001"
    assert settings.llm.vllm.port == 8200 and settings.agents.strict is True
    assert settings.llm.vllm.extra_args == ("--seed", "7")


def test_a_bad_environment_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PREFIXCACHE_LLM__VLLM__PORT", "eighty")
    with pytest.raises(ConfigError, match=r"llm\.vllm\.port in PREFIXCACHE_LLM__VLLM__PORT: "):
        load_settings(write(tmp_path, "{}\n"))


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = write(
        tmp_path / "sub",
        "prompts: {directories: [mine]}\nllm: {vllm: {state_dir: st}}\n",
    )
    settings = load_settings(path)
    assert settings.prompts.directories == ((tmp_path / "sub" / "mine").resolve(),)
    assert settings.llm.vllm.state_dir == (tmp_path / "sub" / "st").resolve()


def test_unknown_top_level_sections_are_ignored(tmp_path: Path) -> None:
    """A platform's config file holds other things (redis, logging, other providers)."""
    path = write(tmp_path, "redis: {host: x}\nllm: {openai: {key: y}, vllm: {port: 8001}}\n")
    assert load_settings(path).llm.vllm.port == 8001


def test_client_and_engine_fields_are_split() -> None:
    cfg = VLLMConfig(port=8123, device="cpu", api_key="sk-secret-123")
    client = cfg.client()
    assert isinstance(client, ClientSettings) and not isinstance(client, EngineSettings)
    assert client.url == "http://127.0.0.1:8123" and client.api_key == "sk-secret-123"
    assert not hasattr(client, "cpu_kvcache_space_gib")
    assert "sk-secret-123" not in repr(cfg)  # the key never shows in a repr or a log line


def test_overrides_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"llm\.vllm\.port"):
        VLLMConfig().with_overrides(port="abc")


def test_legacy_keywords_still_work(tmp_path: Path) -> None:
    settings = Settings(prompt_dirs=(tmp_path,), agents_strict=True)
    assert settings.prompt_dirs == (tmp_path,) and settings.agents_strict is True
    assert PromptLibrary(settings).registry.directories[0] == tmp_path
