"""The ``llm.vllm`` section of the config file, parsed once into ``VLLMConfig``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from ._config import Settings
from ._exceptions import ConfigError

Device = Literal["cpu", "cuda", "auto"]

#: The embedded default: served when no model is configured and no GPU is present.
EMBEDDED_MODEL_NAME = "smollm2-135m-instruct"


def default_home() -> Path:
    """Where prepared models and engine state live (``$PREFIXCACHE_HOME`` overrides)."""
    env = os.environ.get("PREFIXCACHE_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "prefixcache"


@dataclass(frozen=True)
class VLLMConfig:
    """Settings of the vLLM server: the guide's keys plus the ones prefix caching needs."""

    enabled: bool = True
    default_model: str | None = None
    served_model_name: str | None = None
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int = 8192
    trust_remote_code: bool = False
    dtype: str = "auto"
    enable_chunked_prefill: bool | None = None
    enable_prefix_caching: bool = True
    host: str = "127.0.0.1"
    port: int = 8000
    device: Device = "auto"
    extra_args: tuple[str, ...] = ()
    # Where to reach a server that is already running (a remote vLLM, or a router in
    # front of replicas). Empty: the local engine at host:port.
    base_url: str | None = None
    api_key: str | None = None
    # CPU backend: GiB of KV cache (VLLM_CPU_KVCACHE_SPACE).
    cpu_kvcache_space_gib: int = 2
    startup_timeout_s: float = 600.0
    request_timeout_s: float = 300.0
    max_retries: int = 3
    retry_backoff_s: float = 0.5
    state_dir: Path = field(default_factory=lambda: default_home() / "engine")
    model_cache_dir: Path = field(default_factory=lambda: default_home() / "models")

    @classmethod
    def from_settings(cls, settings: Settings) -> VLLMConfig:
        return cls.from_mapping(settings.section("llm", "vllm"), base=_base_dir(settings))

    @classmethod
    def from_mapping(cls, data: dict[str, Any], base: Path | None = None) -> VLLMConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"Unknown key(s) in llm.vllm: {', '.join(unknown)}. Known keys: {', '.join(sorted(known))}."
            )
        values: dict[str, Any] = {k: v for k, v in data.items() if v is not None}
        if "extra_args" in values:
            extra = values["extra_args"]
            if isinstance(extra, str):
                extra = extra.split()
            if not isinstance(extra, list):
                raise ConfigError("llm.vllm.extra_args must be a list of strings.")
            values["extra_args"] = tuple(str(a) for a in extra)
        for key in ("state_dir", "model_cache_dir"):
            if key in values:
                path = Path(str(values[key])).expanduser()
                values[key] = (base / path) if base is not None and not path.is_absolute() else path
        if values.get("device", "auto") not in ("cpu", "cuda", "auto"):
            raise ConfigError(
                f"llm.vllm.device must be cpu, cuda or auto, got {values['device']!r}."
            )
        if values.get("default_model") == "":
            values.pop("default_model")
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"Bad llm.vllm section: {exc}") from exc

    @property
    def url(self) -> str:
        """The OpenAI-compatible base URL clients should use (without ``/v1``)."""
        return (self.base_url or f"http://{self.host}:{self.port}").rstrip("/")

    def resolved_device(self) -> Literal["cpu", "cuda"]:
        if self.device != "auto":
            return self.device
        return "cuda" if Path("/dev/nvidia0").exists() or Path("/dev/nvidiactl").exists() else "cpu"

    def uses_embedded_model(self) -> bool:
        return self.default_model is None

    def model_name(self) -> str:
        """The name clients send as ``model``."""
        if self.served_model_name:
            return self.served_model_name
        return EMBEDDED_MODEL_NAME if self.default_model is None else self.default_model

    def with_overrides(self, **changes: Any) -> VLLMConfig:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(changes)
        return VLLMConfig(**data)


def _base_dir(settings: Settings) -> Path | None:
    return settings.path.parent if settings.path is not None else None
