"""The real embedded vLLM engine, started once per test session on 127.0.0.1.

Its process is started as soon as the tests are collected (when any selected test needs
it), so it boots (about 45 s, mostly imports on one core) while the unit tests run
first; the first live test waits for its /health. It is stopped by PID in the fixture's
teardown, also when tests fail (and at the session's end if no fixture ever took it),
and the teardown checks that nothing was left behind (process, state file, temporary
files).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from prefixcache import PromptLibrary, Settings
from prefixcache.engine.local import LocalEngine, _alive, free_port
from prefixcache.errors import EngineError
from prefixcache.settings import VLLMConfig, default_home

from ..postgres_server import POSTGRES_FOLDER
from .service_process import COMPACT_PROMPTS, ServiceProcess
from .token_ledger import LEDGER


def _temp_entries() -> set[str]:
    return set(os.listdir(tempfile.gettempdir()))


@dataclass
class EarlyEngine:
    """The session's engine, its process started at collection (see the module doc)."""

    config: VLLMConfig
    local: LocalEngine
    #: the temporary folder's entries before the engine started (for the leftover check)
    before: set[str]
    #: set once the `engine` fixture owns it (and stops it)
    taken: bool = False
    #: why its process could not be started (raised by the fixture, not at collection)
    error: EngineError | None = None


_early: list[EarlyEngine] = []  # at most one, for this session


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the engine's process now if a selected test needs it (not waiting for it)."""
    if not any("engine" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    config = VLLMConfig(
        port=free_port(),
        device="cpu",
        state_dir=Path(tempfile.mkdtemp(prefix="pc-test-engine-state-")),
        model_cache_dir=default_home() / "models",  # prepared by `make setup`
        request_timeout_s=300,
        max_retries=1,
        retry_backoff_s=0.2,
    )
    before = _temp_entries()
    local = LocalEngine(config, progress=print)
    early = EarlyEngine(config, local, before)
    try:
        local.start_process()
    except EngineError as exc:  # the live tests fail with it; the unit tests still run
        early.error = exc
    _early.append(early)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the early engine if no fixture took it (by PID) and remove its state folder;
    fail the session when the live suite prefilled more than its token budget."""
    if LEDGER.last and LEDGER.over_budget() and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    for early in _early:
        if not early.taken:
            early.local.stop()
        shutil.rmtree(early.config.state_dir, ignore_errors=True)
    _early.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Charge each live test's file with the uncached tokens the engines prefilled during
    it (setup and teardown included): see ``token_ledger.py``."""
    if item.get_closest_marker("integration") is None:
        yield
        return
    LEDGER.account()
    LEDGER.current = item.path.name
    yield
    LEDGER.account()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if LEDGER.last:
        terminalreporter.section("live suite: work sent to the engines")
        for line in LEDGER.report():
            terminalreporter.write_line(line, red=LEDGER.over_budget())


def _the_early_engine() -> EarlyEngine:
    if not _early:  # pragma: no cover - collection starts it for every test that needs it
        raise RuntimeError("the session's engine was not started at collection")
    return _early[0]


@pytest.fixture(scope="session")
def engine_config() -> VLLMConfig:
    return _the_early_engine().config


@pytest.fixture(scope="session")
def engine_config_file(engine_config: VLLMConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session engine's config as a user's config file, for `prefixcache engine ...`."""
    fields = (
        "port",
        "device",
        "state_dir",
        "model_cache_dir",
        "request_timeout_s",
        "max_retries",
        "retry_backoff_s",
    )
    vllm = {name: getattr(engine_config, name) for name in fields}
    vllm = {k: str(v) if isinstance(v, Path) else v for k, v in vllm.items()}
    path = tmp_path_factory.mktemp("engine-config") / "config.yaml"
    path.write_text(yaml.safe_dump({"llm": {"vllm": vllm}}))
    return path


@pytest.fixture(scope="session")
def engine(engine_config: VLLMConfig) -> Iterator[LocalEngine]:
    early = _the_early_engine()
    early.taken = True
    if early.error is not None:
        raise early.error
    local, before = early.local, early.before
    try:
        local.wait_healthy(time.monotonic() + engine_config.startup_timeout_s)
        LEDGER.watch(local.base_url)
        previous, LEDGER.current = LEDGER.current, "(engine start: calibration)"
        local.calibrate()  # what `engine start` does: doctor and status show it
        LEDGER.account()
        LEDGER.current = previous
        pid = local.recorded_pid()
        run_dir = local.run_dir
        assert pid is not None and run_dir is not None and run_dir.is_dir()
        yield local
    finally:
        local.stop()
    assert not _alive(pid), f"vLLM server pid {pid} still alive after stop"
    assert not local.pid_file.exists()
    assert not run_dir.exists()
    leftovers = {
        e
        for e in _temp_entries() - before
        if ("vllm" in e or "torch" in e or "prefixcache" in e or len(e) == 36)
        and not e.startswith(POSTGRES_FOLDER)  # the session's PostgreSQL, stopped after
    }
    assert not leftovers, f"the engine left files in {tempfile.gettempdir()}: {sorted(leftovers)}"


@pytest.fixture(scope="session")
def live_library() -> PromptLibrary:
    """The live suite's prompts: the compact set (see ``COMPACT_PROMPTS``)."""
    return PromptLibrary(Settings(prompt_dirs=[COMPACT_PROMPTS]))


@pytest.fixture(scope="session")
def guide_library() -> PromptLibrary:
    """The guide's real prompts (about 4,300 tokens): for exactly one live test."""
    return PromptLibrary(Settings())


@pytest.fixture(scope="session")
def compact_config_file(engine: LocalEngine, engine_config_file: Path) -> Path:
    """A user's config for CLI commands: the session's engine (as `engine start` would
    run it: port, state folder) and the compact prompts."""
    data = yaml.safe_load(engine_config_file.read_text())
    data["prompts"] = {"directories": [str(COMPACT_PROMPTS)]}
    path = engine_config_file.with_name("compact.yaml")
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="session")
def block_size(engine: LocalEngine) -> int:
    from prefixcache.llm.inspector import EngineInspector

    with EngineInspector(engine.base_url, engine.model) as inspector:
        size = inspector.cache_stats().block_size
    assert size is not None
    return size


@pytest.fixture
def served_model_dir(engine: LocalEngine) -> Path:
    return Path(engine.model_path())


@pytest.fixture(scope="session")
def service(
    engine: LocalEngine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """`prefixcache serve` in front of the session's engine, on 127.0.0.1."""
    proc = ServiceProcess(
        tmp_path_factory.mktemp("service"),
        engine.base_url,
        default_max_tokens=4,
        rate_limit_per_minute=0,
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
    assert proc.proc is None


#: the tests that stop the shared engine, in the order they run after every other test:
#: the faults test stops it and starts it again with `prefixcache engine start`; the
#: command-line test then checks status, logs and `engine stop` on it; the fleet, which
#: starts replicas of its own, runs with the shared engine stopped
LAST = ("test_service_faults.py", "test_cli_live.py", "test_fleet_live.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The unit tests run first (while the engine boots), then the live tests; those that
    stop and restart the shared engine run after every other test."""

    def key(item: pytest.Item) -> int:
        if item.get_closest_marker("integration") is None:
            return 0
        if item.get_closest_marker("runs_last") is None:
            return 1
        return 2 + next((i for i, name in enumerate(LAST) if item.path.name == name), len(LAST))

    items.sort(key=key)
