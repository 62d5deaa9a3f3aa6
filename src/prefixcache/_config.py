"""Configuration: loaded once from YAML, then passed in as a ``Settings`` object."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ._exceptions import ConfigError

CONFIG_ENV_VAR = "PREFIXCACHE_CONFIG"
DEFAULT_CONFIG_PATH = Path("config/config.yaml")


@dataclass(frozen=True)
class Settings:
    """Everything read from ``config/config.yaml``.

    ``raw`` keeps the whole document so that later sections (``llm.vllm`` and
    friends) can be parsed by the modules that own them.
    """

    path: Path | None = None
    prompt_dirs: tuple[Path, ...] = ()
    agents_strict: bool = False
    extra_agents: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def section(self, *keys: str) -> dict[str, Any]:
        """Return a nested mapping such as ``settings.section("llm", "vllm")`` ({} if absent)."""
        node: Any = self.raw
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
            if node is None:
                return {}
        if not isinstance(node, dict):
            raise ConfigError(f"{'.'.join(keys)} in {self.path} must be a mapping, got {node!r}")
        return node


def config_path() -> Path | None:
    """The config file in use: ``$PREFIXCACHE_CONFIG`` if set, else ``config/config.yaml``."""
    env = os.environ.get(CONFIG_ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"{CONFIG_ENV_VAR}={env} does not name a file. Point it at a config.yaml "
                "or unset it to use config/config.yaml."
            )
        return path
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None


def load_settings(path: Path | str | None = None) -> Settings:
    """Read the config file (or the default location) into ``Settings``."""
    resolved = Path(path) if path is not None else config_path()
    if resolved is None:
        return Settings()
    try:
        data = yaml.safe_load(resolved.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"Cannot read config {resolved}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"Config {resolved} must be a YAML mapping at the top level.")
    base = resolved.parent
    prompts = data.get("prompts") or {}
    dirs = prompts.get("directories") or []
    if not isinstance(dirs, list):
        raise ConfigError(f"prompts.directories in {resolved} must be a list of paths.")
    prompt_dirs = tuple((base / Path(d).expanduser()).resolve() for d in dirs)
    agents = data.get("agents") or {}
    extra = agents.get("tiers") or {}
    if not isinstance(extra, dict):
        raise ConfigError(f"agents.tiers in {resolved} must be a mapping of tier -> settings.")
    return Settings(
        path=resolved,
        prompt_dirs=prompt_dirs,
        agents_strict=bool(agents.get("strict", False)),
        extra_agents=extra,
        raw=data,
    )
