"""Typed settings: found once, validated once, then passed in.

Where the file comes from (first that applies):

1. the ``path`` given to ``load_settings`` (the CLI's ``--config``);
2. ``$PREFIXCACHE_CONFIG``;
3. ``./config/config.yaml`` in the current folder;
4. none: the built-in defaults.

Single fields can then be overridden from the environment, ``__`` separating the
levels: ``PREFIXCACHE_LLM__VLLM__BASE_URL=http://10.0.0.5:8000``,
``PREFIXCACHE_AGENTS__STRICT=true``. A value is read as a YAML scalar or flow list
(``8001``, ``true``, ``[a, b]``). Every field is validated; a wrong value raises
``ConfigError`` naming the key and where it came from (the file, or the variable).

Relative paths in the file are relative to the file's folder; in the environment, to
the current folder.

The ``llm.vllm`` section keeps the guide's flat keys, but its fields fall in two typed
groups: ``ClientSettings`` (what a client needs to reach a server: URL, key, model,
timeouts, retries) and ``EngineSettings`` (what starting a local engine needs: device,
dtype, memory, KV space, extra arguments). ``VLLMConfig`` is both; the client, the
service and the fleet take ``ClientSettings``.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError

CONFIG_ENV_VAR = "PREFIXCACHE_CONFIG"
ENV_PREFIX = "PREFIXCACHE_"
ENV_NESTING = "__"
DEFAULT_CONFIG_PATH = Path("config/config.yaml")

Device = Literal["cpu", "cuda", "auto"]

#: The embedded default: served when no model is configured and no GPU is present.
EMBEDDED_MODEL_NAME = "smollm2-135m-instruct"

PositiveFloat = Annotated[float, Field(gt=0)]


def default_home() -> Path:
    """Where prepared models and engine state live (``$PREFIXCACHE_HOME`` overrides)."""
    env = os.environ.get("PREFIXCACHE_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "prefixcache"


def _checked_url(value: str) -> str:
    """``value`` if httpx can use it (a host, a port in 1-65535), else a ValueError that
    says what is wrong (the settings' loader names the key and the file)."""
    import httpx

    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise ValueError(f"is not a usable URL ({exc}), got {value!r}") from None
    if not url.host:
        raise ValueError(f"has no host, got {value!r} (e.g. http://127.0.0.1:8000)")
    if url.port is not None and not 1 <= url.port <= 65535:
        raise ValueError(f"has port {url.port}, outside 1-65535, got {value!r}")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


class ClientSettings(_Section):
    """What a client needs to reach a vLLM (or vLLM-compatible) server."""

    enabled: bool = True
    #: A server that is already running (a remote vLLM, or a router in front of
    #: replicas). Empty: the local engine at ``host:port``.
    base_url: str | None = None
    api_key: str | None = Field(default=None, repr=False)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    #: The model to serve (hub id or folder); empty: the embedded SmolLM2 on CPU.
    default_model: str | None = None
    #: The name clients send as ``model`` (default: derived from ``default_model``).
    served_model_name: str | None = None
    request_timeout_s: PositiveFloat = 300.0
    max_retries: int = Field(default=3, ge=0, le=100)
    retry_backoff_s: float = Field(default=0.5, ge=0)
    #: the routing key sent as ``x-session-id`` (the first header vllm-router's hash and
    #: sticky policies read): "session" (a conversation stays on its replica; the prompt's
    #: prefix hash when no session is known) or "prefix" (an agent stays on its replica)
    affinity: Literal["session", "prefix"] = "session"

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {value!r}")
        return _checked_url(value)

    @field_validator("default_model", "served_model_name", "api_key")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return None if value is None or value.strip() == "" else value

    @property
    def url(self) -> str:
        """The OpenAI-compatible base URL clients use (without ``/v1``)."""
        return (self.base_url or f"http://{self.host}:{self.port}").rstrip("/")

    def uses_embedded_model(self) -> bool:
        return self.default_model is None

    def model_name(self) -> str:
        """The name clients send as ``model``."""
        if self.served_model_name:
            return self.served_model_name
        return EMBEDDED_MODEL_NAME if self.default_model is None else self.default_model

    def client(self) -> ClientSettings:
        """Only the client's fields (what the client, the service and the fleet need)."""
        return ClientSettings(**{k: getattr(self, k) for k in ClientSettings.model_fields})


class EngineSettings(_Section):
    """What starting a local vLLM engine needs beyond the client's fields."""

    tensor_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    max_model_len: int = Field(default=8192, ge=16)
    trust_remote_code: bool = False
    dtype: Literal["auto", "bfloat16", "float16", "float32", "half", "float"] = "auto"
    #: Unset keeps vLLM's default (the guide's "critical for prefix caching" is wrong).
    enable_chunked_prefill: bool | None = None
    enable_prefix_caching: bool = True
    device: Device = "auto"
    extra_args: tuple[str, ...] = ()
    #: CPU backend: GiB of KV cache (``VLLM_CPU_KVCACHE_SPACE``). 4 GiB hold about 1,450
    #: blocks of 128 tokens of the embedded model: every arm's prefixes of a full benchmark.
    cpu_kvcache_space_gib: int = Field(default=4, ge=1, le=1024)
    startup_timeout_s: PositiveFloat = 600.0
    #: measure prefill tokens/s, a cached request and decode once the server is up (three
    #: requests, about 1,100 uncached tokens): long commands size and time themselves by it
    calibrate_on_start: bool = True
    state_dir: Path = Field(default_factory=lambda: default_home() / "engine")
    model_cache_dir: Path = Field(default_factory=lambda: default_home() / "models")

    @field_validator("extra_args", mode="before")
    @classmethod
    def _args(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, str):
            return tuple(value.split())
        if isinstance(value, list | tuple) and not all(isinstance(a, str) for a in value):
            raise ValueError("must be a list of strings (quote numbers: '--seed', '0')")
        return value

    @field_validator("state_dir", "model_cache_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    def resolved_device(self) -> Literal["cpu", "cuda"]:
        if self.device != "auto":
            return self.device
        return "cuda" if Path("/dev/nvidia0").exists() or Path("/dev/nvidiactl").exists() else "cpu"


class VLLMConfig(ClientSettings, EngineSettings):
    """The ``llm.vllm`` section: the guide's keys, client and engine fields together."""

    @classmethod
    def from_settings(cls, settings: Settings) -> VLLMConfig:
        return settings.llm.vllm

    @classmethod
    def from_mapping(cls, data: dict[str, Any], base: Path | None = None) -> VLLMConfig:
        """Validate a mapping (as in the file); relative paths resolve against ``base``."""
        data = _relative_paths({"llm": {"vllm": dict(data)}}, base)["llm"]["vllm"]
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise _config_error(exc, ("llm", "vllm"), None, {}) from None

    def with_overrides(self, **changes: Any) -> VLLMConfig:
        """A copy with some fields changed, validated like the file's values."""
        data = self.model_dump()
        data.update(changes)
        try:
            return VLLMConfig.model_validate(data)
        except ValidationError as exc:
            raise _config_error(exc, ("llm", "vllm"), None, {}) from None


class OllamaSettings(_Section):
    base_url: str = "http://127.0.0.1:11434"
    model: str = "llama3.2"


class LLMSettings(BaseModel):
    """The ``llm`` section. Other providers' sections (from the guide's platform) are kept
    and ignored."""

    model_config = ConfigDict(frozen=True, extra="allow")
    vllm: VLLMConfig = Field(default_factory=VLLMConfig)
    ollama: OllamaSettings = Field(default_factory=OllamaSettings)


class PromptsSettings(_Section):
    #: Prompt directories layered before the built-in library (first match wins).
    directories: tuple[Path, ...] = ()

    @field_validator("directories", mode="before")
    @classmethod
    def _dirs(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, str | Path):
            raise ValueError("must be a list of paths (write `directories: [my-prompts]`)")
        return value

    @field_validator("directories", mode="after")
    @classmethod
    def _expand(cls, value: tuple[Path, ...]) -> tuple[Path, ...]:
        return tuple(p.expanduser() for p in value)


class AgentsSettings(_Section):
    #: True: unknown agent types raise ``UnknownAgentError`` instead of falling back.
    strict: bool = False
    #: Extends or overrides the built-in tier map (``prompts/data/agents.yaml``).
    tiers: dict[str, Any] = Field(default_factory=dict)

    @field_validator("tiers", mode="before")
    @classmethod
    def _tiers(cls, value: Any) -> Any:
        return {} if value is None else value


class FleetSettings(_Section):
    """The ``fleet`` section: N local vLLM replicas behind vllm-router."""

    replicas: int = Field(default=2, ge=1, le=64)
    #: vllm-router's policy; sticky_least_loaded keyed on x-session-id keeps sessions on
    #: their replica and balances new ones (cache_aware misroutes agents that share one
    #: base prompt: see docs/fleet.md)
    policy: Literal[
        "random",
        "round_robin",
        "cache_aware",
        "kv_aware",
        "power_of_two",
        "consistent_hash",
        "sticky_least_loaded",
    ] = "sticky_least_loaded"
    router_host: str = "127.0.0.1"
    #: the port clients use (point llm.vllm.base_url at http://router_host:router_port)
    router_port: int = Field(default=8200, ge=1, le=65535)
    #: vllm-router's Prometheus exporter is always on: each router needs its own port
    prometheus_port: int = Field(default=8290, ge=1, le=65535)
    #: replica i listens on replica_base_port + i
    replica_base_port: int = Field(default=8201, ge=1, le=65535)
    #: fail over in seconds, not minutes (the router's defaults: 10 failures, 3 x 60 s)
    router_args: tuple[str, ...] = (
        "--cb-failure-threshold",
        "2",
        "--health-check-interval-secs",
        "2",
        "--health-failure-threshold",
        "2",
    )
    #: GiB of KV cache per replica (CPU); empty: llm.vllm.cpu_kvcache_space_gib
    kv_space_gib: int | None = Field(default=None, ge=1, le=1024)
    #: give replica i CPU core i (VLLM_CPU_OMP_THREADS_BIND), when there are enough cores
    bind_cores: bool = True
    #: VLLM_SERVER_DEV_MODE=1 on the replicas: /reset_prefix_cache for fresh caches
    dev_mode: bool = False
    startup_timeout_s: PositiveFloat = 900.0


class GatewaySettings(_Section):
    """``service.gateway``: what a tenant may ask of the engine through ``/v1``.

    Every request field is on an allowlist (``docs/service.md`` has the table); the
    settings below widen it on purpose. Anything else answers 422 naming the field and
    the setting that would allow it."""

    #: completions per request (OpenAI's ``n``)
    max_n: int = Field(default=1, ge=1, le=64)
    #: ceiling for ``max_tokens`` / ``max_completion_tokens`` (empty: the model's context)
    max_tokens: int | None = Field(default=4096, ge=1)
    #: ``ignore_eos`` (generate to max_tokens whatever the model says): off by default
    allow_ignore_eos: bool = False
    #: ``response_format`` json_object/json_schema and vLLM's structured outputs
    #: (``structured_outputs``, ``guided_*``): grammar compilation costs engine time
    allow_structured_output: bool = False
    #: image, audio, video and file parts in messages (the engine would fetch URLs)
    allow_media: bool = False
    #: ``logit_bias`` (up to 300 entries)
    allow_logit_bias: bool = False
    #: models a caller may name (empty: the configured model only)
    models: list[str] = Field(default_factory=list)
    #: ceiling for ``top_logprobs``
    max_top_logprobs: int = Field(default=5, ge=0, le=20)
    #: total time a gateway stream may last before it is ended with an error event
    stream_deadline_s: PositiveFloat = 600.0


class WarmSettings(_Section):
    """``service.warm``: the cache levers on the serving path (``service/warmup.py``)."""

    #: warm each agent's static prefix under each tenant's salt once the engine answers
    #: (again after an engine restart), and prefetch the agents callers say come next
    enabled: bool = True
    #: pad the prompts' static layers to the engine's KV block boundaries at start
    align: bool = True
    #: the share of the engine's KV blocks warm-up may fill; beyond it the least used
    #: (tenant, agent) prefixes are left cold
    kv_fraction: float = Field(default=0.5, gt=0, le=1)


def _onoff(value: bool) -> str:
    return "on" if value else "off"


class StabilizeSettings(_Section):
    """``service.stabilize``: the gateway moves the lines of a system prompt that change
    between requests after the lines that do not (``docs/stabilize.md``).

    ``mode`` for every tenant, ``tenants`` for some: ``off`` (nothing learned), ``shadow``
    (learned and measured, requests sent unchanged: the default) or ``on`` (rewritten).
    A request's ``X-Prefixcache-Stabilize`` header may lower its tenant's mode, never
    raise it. ``service.stabilize: on`` is short for ``{mode: on}``."""

    mode: Literal["off", "shadow", "on"] = "shadow"
    tenants: dict[str, Literal["off", "shadow", "on"]] = Field(default_factory=dict)
    #: requests kept per family to learn from
    history: int = Field(default=8, ge=2, le=64)
    #: families kept (least recently seen dropped first)
    max_families: int = Field(default=4096, ge=1, le=1_000_000)

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        """``stabilize: on`` for ``{mode: on}``; YAML reads an unquoted on/off as a
        boolean, taken here as the mode it spells."""
        if isinstance(data, str | bool):
            data = {"mode": data}
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("mode"), bool):
            data["mode"] = _onoff(data["mode"])
        if isinstance(data.get("tenants"), dict):
            data["tenants"] = {
                k: _onoff(v) if isinstance(v, bool) else v for k, v in data["tenants"].items()
            }
        return data

    def mode_for(self, tenant: str) -> Literal["off", "shadow", "on"]:
        return self.tenants.get(tenant, self.mode)


class ServiceSettings(_Section):
    """The ``service`` section: ``prefixcache serve``."""

    #: loopback by default: expose it on purpose, behind TLS
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    #: SQLAlchemy async URL; SQLite (WAL) by default, PostgreSQL is a URL change
    #: (postgresql+asyncpg://...). Empty: a file under the prefixcache home.
    database_url: str | None = None
    #: HMAC secret for per-tenant cache salts. Empty: a random secret is created once,
    #: next to the database (service.secret, mode 0600), and kept.
    secret: str | None = Field(default=None, repr=False)
    #: cache isolation: a salt per "tenant" (default), per "user", or "shared" (none)
    cache_isolation: Literal["tenant", "user", "shared"] = "tenant"
    #: chat history: "append" (the conversation as messages after a fixed system prompt)
    #: or "system" (the guide's last exchanges inside the system prompt)
    history_layout: Literal["append", "system"] = "append"
    #: exchanges kept in the system prompt when history_layout is "system"
    history_exchanges: int = Field(default=3, ge=0, le=100)
    #: exchanges sent as messages when history_layout is "append" (oldest dropped)
    history_max_messages: int = Field(default=200, ge=2, le=10_000)
    default_agent: str = "frontend-engineer"
    default_max_tokens: int = Field(default=256, ge=1)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_message_chars: int = Field(default=100_000, ge=1)
    #: requests per minute per API key (0: no limit)
    rate_limit_per_minute: int = Field(default=600, ge=0)
    #: tools each agent may use (the guide's get_user_tools filters them by the key's
    #: permissions); an agent not listed gets default_tools
    agent_tools: dict[str, list[str]] = Field(default_factory=dict)
    default_tools: list[str] = Field(default_factory=lambda: ["file_read", "file_write"])
    #: unknown agent types answer 422 (the library falls back to tier 1 otherwise)
    strict_agents: bool = True
    #: keep the prompt text of gateway requests (for `prefixcache explain`); off: only figures
    record_prompts: bool = False
    record_prompts_days: int = Field(default=7, ge=1)
    #: sessions (their messages, tasks and records) untouched this many days are
    #: deleted, at start and hourly (empty: kept until deleted by their user)
    retention_days: int | None = Field(default=90, ge=1)
    #: requests in flight per API key (waiting ones included); the next one answers 429
    #: with Retry-After
    max_concurrent_per_key: int = Field(default=16, ge=1, le=10_000)
    #: engine requests in flight from this instance; more wait their turn (round robin
    #: between tenants) for up to ``queue_timeout_s``, then answer 503
    max_inflight: int = Field(default=64, ge=1, le=10_000)
    #: the largest share of ``max_inflight`` one tenant may hold at once (the rest stays
    #: free for the others); its further requests wait
    tenant_share: float = Field(default=0.5, gt=0, le=1)
    queue_timeout_s: PositiveFloat = 30.0
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    warm: WarmSettings = Field(default_factory=WarmSettings)
    stabilize: StabilizeSettings = Field(default_factory=StabilizeSettings)

    @field_validator("database_url", "secret")
    @classmethod
    def _blank(cls, value: str | None) -> str | None:
        return None if value is None or value.strip() == "" else value.strip()

    @field_validator("secret")
    @classmethod
    def _long_secret(cls, value: str | None) -> str | None:
        if value is not None and len(value.encode()) < 32:
            raise ValueError(
                f"the secret has {len(value.encode())} bytes; it must have at least 32 "
                "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`), or leave "
                "it empty to have one created next to the database"
            )
        return value

    def tenant_limit(self) -> int:
        """In-flight engine requests one tenant may hold (at least one)."""
        return max(1, int(self.max_inflight * self.tenant_share))

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{default_home() / 'service' / 'service.db'}"


class Settings(BaseModel):
    """Everything read from the config file (and the environment).

    Unknown top-level sections are ignored (a platform's config file holds other
    things); unknown keys inside prefixcache's own sections are errors.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", arbitrary_types_allowed=True)

    prompts: PromptsSettings = Field(default_factory=PromptsSettings)
    agents: AgentsSettings = Field(default_factory=AgentsSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    fleet: FleetSettings = Field(default_factory=FleetSettings)
    #: The file these settings came from (``None``: built-in defaults only).
    path: Path | None = Field(default=None, exclude=True)

    def __init__(self, **data: Any) -> None:
        # explicit, so that the 0.1 keywords (prompt_dirs=, agents_strict=, extra_agents=)
        # type-check as well as they run
        super().__init__(**data)

    @model_validator(mode="before")
    @classmethod
    def _legacy_keywords(cls, data: Any) -> Any:
        """``Settings(prompt_dirs=..., agents_strict=..., extra_agents=...)`` (0.1 API)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "prompt_dirs" in data:
            data["prompts"] = {"directories": data.pop("prompt_dirs")}
        agents = dict(data.get("agents") or {})
        if "agents_strict" in data:
            agents["strict"] = data.pop("agents_strict")
        if "extra_agents" in data:
            agents["tiers"] = data.pop("extra_agents")
        if agents:
            data["agents"] = agents
        data.pop("raw", None)
        return data

    # -- the 0.1 attribute names ---------------------------------------------------
    @property
    def prompt_dirs(self) -> tuple[Path, ...]:
        return self.prompts.directories

    @property
    def agents_strict(self) -> bool:
        return self.agents.strict

    @property
    def extra_agents(self) -> dict[str, Any]:
        return self.agents.tiers

    @property
    def vllm(self) -> VLLMConfig:
        return self.llm.vllm

    @property
    def source(self) -> str:
        """Where the settings came from, for messages."""
        return str(self.path) if self.path is not None else "built-in defaults"


def config_path(path: Path | str | None = None) -> Path | None:
    """The config file in use, by the documented search order (``None``: defaults)."""
    if path is not None:
        resolved = Path(path).expanduser()
        if not resolved.is_file():
            raise ConfigError(
                f"Config file {resolved} does not exist (given with --config). "
                "Pass an existing file, or leave --config out to use the search order."
            )
        return resolved
    env = os.environ.get(CONFIG_ENV_VAR)
    if env:
        resolved = Path(env).expanduser()
        if not resolved.is_file():
            raise ConfigError(
                f"{CONFIG_ENV_VAR}={env} does not name a file. Point it at a config.yaml "
                "or unset it to use config/config.yaml."
            )
        return resolved
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None


def load_settings(path: Path | str | None = None) -> Settings:
    """Find, read and validate the settings (see the module docstring for the order)."""
    resolved = config_path(path)
    data: dict[str, Any] = {}
    if resolved is not None:
        data = _read_yaml(resolved)
        data = _relative_paths(data, resolved.parent)
    origins: dict[tuple[str, ...], str] = {}
    for key_path, value, variable in _env_overrides():
        _set_path(data, key_path, value, variable)
        origins[key_path] = variable
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, (), resolved, origins) from None
    return settings.model_copy(update={"path": resolved})


# -- internals -----------------------------------------------------------------------


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read config {path}: {exc.strerror or exc}.") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"Config {path} is not UTF-8 text (byte {exc.start}: {raw[exc.start : exc.start + 1]!r}). "
            "Save it as UTF-8."
        ) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"Config {path} must be a YAML mapping at the top level (got {type(data).__name__})."
        )
    return data


_PATH_KEYS: tuple[tuple[str, ...], ...] = (
    ("llm", "vllm", "state_dir"),
    ("llm", "vllm", "model_cache_dir"),
)


def _relative_paths(data: dict[str, Any], base: Path | None) -> dict[str, Any]:
    """Resolve the file's relative paths against its folder (other values untouched)."""
    if base is None:
        return data

    def fix(value: Any) -> Any:
        if isinstance(value, str) and value.strip():
            p = Path(value).expanduser()
            return str(p if p.is_absolute() else (base / p).resolve())
        return value

    prompts = data.get("prompts")
    if isinstance(prompts, dict) and isinstance(prompts.get("directories"), list):
        prompts["directories"] = [fix(d) for d in prompts["directories"]]
    for key_path in _PATH_KEYS:
        node: Any = data
        for key in key_path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and key_path[-1] in node:
            node[key_path[-1]] = fix(node[key_path[-1]])
    return data


def _env_overrides() -> list[tuple[tuple[str, ...], Any, str]]:
    found = []
    for name, raw in sorted(os.environ.items()):
        if not name.startswith(ENV_PREFIX) or ENV_NESTING not in name:
            continue
        parts = tuple(p.lower() for p in name[len(ENV_PREFIX) :].split(ENV_NESTING))
        if not all(parts):
            raise ConfigError(f"Environment variable {name} has an empty level between '__'.")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        found.append((parts, value, name))
    return found


def _set_path(data: dict[str, Any], key_path: tuple[str, ...], value: Any, origin: str) -> None:
    node = data
    for key in key_path[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{origin} sets a key inside {key!r}, which is not a mapping.")
        node = child
    node[key_path[-1]] = value


def _config_error(
    exc: ValidationError,
    prefix: tuple[str, ...],
    path: Path | None,
    origins: dict[tuple[str, ...], str],
) -> ConfigError:
    lines = []
    for error in exc.errors(include_url=False):
        loc = prefix + tuple(str(p) for p in error["loc"])
        key = ".".join(loc) or "(top level)"
        where = next(
            (origins[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in origins),
            str(path) if path is not None else "the settings",
        )
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            known = _known_keys(loc[:-1])
            close = difflib.get_close_matches(loc[-1], known, n=2, cutoff=0.6)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            message = f"unknown key.{hint} Known keys here: {', '.join(sorted(known))}"
        elif "input" in error and error["type"] not in ("missing",):
            message = f"{message} (got {error['input']!r})"
        lines.append(f"{key} in {where}: {message}")
    head = "Invalid configuration" + (f" in {path}" if path else "")
    return ConfigError(head + ":\n  " + "\n  ".join(lines))


def _known_keys(loc: tuple[str, ...]) -> list[str]:
    model: Any = Settings
    for key in loc:
        field = getattr(model, "model_fields", {}).get(key)
        if field is None:
            return []
        model = field.annotation
    fields = getattr(model, "model_fields", None)
    return list(fields) if fields else []
