"""The layout is the architecture: data flows one way, and the prompt library stays light.

prompts -> llm -> engine / layout -> diagnostics / traces -> bench -> service -> cli.
``errors``, ``settings`` and ``_extras`` sit under everything and import none of the
subpackages. Every allowed edge is one the code uses (an unused one is a test failure,
so the map cannot drift into allowing everything), and no module imports another
subpackage's private names.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "prefixcache"

#: subpackage -> the subpackages it imports (besides the base modules): exactly these
ALLOWED: dict[str, set[str]] = {
    "prompts": set(),
    "llm": {"prompts"},
    "engine": {"llm"},
    "layout": {"prompts", "llm"},
    "diagnostics": {"prompts", "llm", "engine", "layout"},
    "traces": {"prompts", "llm", "layout"},
    "bench": {"prompts", "llm", "engine", "layout", "traces"},
    "service": {"prompts", "llm", "layout", "traces"},
    "cli": {"prompts", "llm", "engine", "layout", "diagnostics", "traces", "bench", "service"},
}
BASE = {"errors", "settings", "_extras", "_version"}
LAYERS = set(ALLOWED)


def _imports(source: str, parts: tuple[str, ...]) -> set[str]:
    """The prefixcache top-level parts a module imports (relative imports resolved).

    ``parts``: the module's path inside the package, e.g. ``("prompts", "compose.py")``.
    """
    package = list(parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                if node.module:
                    targets = [[*base, *node.module.split(".")]]
                else:
                    targets = [[*base, a.name] for a in node.names]
            elif node.module and node.module.split(".")[0] == "prefixcache":
                targets = [node.module.split(".")[1:]]
            else:
                continue
            found.update(t[0] for t in targets if t)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                bits = alias.name.split(".")
                if bits[0] == "prefixcache" and len(bits) > 1:
                    found.add(bits[1])
    return found


def _violations(source: str, parts: tuple[str, ...]) -> set[str]:
    imported = _imports(source, parts) - {parts[0].removesuffix(".py")}
    if len(parts) == 1:  # a top-level module
        if parts[0] in {"__init__.py", "__main__.py"}:
            return set()  # the facade and the entry point may use any layer
        return imported & LAYERS
    return (imported & LAYERS) - ALLOWED[parts[0]]


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "data" not in p.relative_to(PACKAGE).parts)


def test_the_layout_has_the_expected_subpackages() -> None:
    for name in LAYERS:
        assert (PACKAGE / name / "__init__.py").is_file(), name
    assert (PACKAGE / "prompts" / "data" / "agents.yaml").is_file()
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    # only the facade and small base modules stay at the top; features live in subpackages
    assert set(flat) <= {
        "__init__.py",
        "__main__.py",
        "_extras.py",
        "_version.py",
        "errors.py",
        "settings.py",
    }, flat


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_reaches_up(path: Path) -> None:
    parts = path.relative_to(PACKAGE).parts
    bad = _violations(path.read_text(encoding="utf-8"), parts)
    assert not bad, f"{'/'.join(parts)} imports {sorted(bad)}, above its layer"


def test_every_allowed_edge_is_used() -> None:
    used: dict[str, set[str]] = {name: set() for name in ALLOWED}
    for path in _modules():
        parts = path.relative_to(PACKAGE).parts
        if len(parts) > 1:
            used[parts[0]] |= (_imports(path.read_text(encoding="utf-8"), parts) & LAYERS) - {
                parts[0]
            }
    assert used == ALLOWED


def _private_imports(source: str, parts: tuple[str, ...]) -> list[str]:
    """Private names (``_x``) a module imports from another subpackage (or a private
    module of one); the base modules ``_extras`` and ``_version`` are the package's own."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            package = list(parts[:-1])
            target = [*package[: len(package) - (node.level - 1)], *(node.module or "").split(".")]
        elif node.module and node.module.startswith("prefixcache."):
            target = node.module.split(".")[1:]
        else:
            continue
        target = [t for t in target if t]
        if not target or target[0] == parts[0] or target[0] in {"_extras", "_version"}:
            continue
        private_module = [t for t in target if t.startswith("_")]
        names = [a.name for a in node.names if a.name.startswith("_")]
        if private_module or names:
            found.append(f"{'.'.join(target)}: {', '.join(private_module + names)}")
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_another_packages_private_names(path: Path) -> None:
    parts = path.relative_to(PACKAGE).parts
    assert not _private_imports(path.read_text(encoding="utf-8"), parts)


def test_the_private_import_check_can_fail() -> None:
    source = "from ..llm.providers import SESSION_HEADER, _response"
    assert _private_imports(source, ("service", "gateway.py")) == ["llm.providers: _response"]
    assert _private_imports("from .._extras import require", ("llm", "x.py")) == []
    assert _private_imports("from .compose import _x", ("prompts", "y.py")) == []


@pytest.mark.parametrize(
    ("source", "parts", "expected"),
    [
        ("from ..llm import models", ("prompts", "compose.py"), {"llm"}),
        ("from ..cli.app import app", ("bench", "runner.py"), {"cli"}),
        ("from prefixcache.bench import runner", ("engine", "local.py"), {"bench"}),
        ("from .prompts import library", ("settings.py",), {"prompts"}),
        ("from ..prompts import library", ("llm", "metrics.py"), set()),
        ("from . import compose", ("prompts", "__init__.py"), set()),
    ],
)
def test_the_layering_check_can_fail(
    source: str, parts: tuple[str, ...], expected: set[str]
) -> None:
    assert _violations(source, parts) == expected


HEAVY = ("httpx", "vllm", "torch", "matplotlib", "prometheus_client", "typer", "rich")


def test_the_prompt_library_imports_nothing_heavy() -> None:
    code = (
        "import json, sys\n"
        "import prefixcache\n"
        "text = prefixcache.get_optimized_prompt(agent_type='code-reviewer', session_id='s')\n"
        "assert 'code' in text.lower()\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    env = dict(os.environ, PREFIXCACHE_CONFIG="")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_weight_check_sees_a_heavy_import() -> None:
    """The check above can fail: touching a lazy client name does import httpx."""
    code = "import sys, prefixcache\nprefixcache.LLMInterface\nprint('httpx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_a_missing_extra_names_the_extra() -> None:
    """With httpx made unimportable, the client names the `llm` extra to install."""
    code = (
        "import sys\n"
        "sys.modules['httpx'] = None\n"  # what an uninstalled package looks like to import
        "import prefixcache\n"
        "try:\n"
        "    prefixcache.LLMInterface\n"
        "except prefixcache.MissingExtraError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'prefixcache[llm]'" in out.stdout


def test_the_cli_entry_point_names_its_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['typer'] = None\n"
        "import importlib.util as u\n"
        "real = u.find_spec\n"
        "u.find_spec = lambda name, *a: None if name == 'typer' else real(name, *a)\n"
        "from prefixcache.cli import main\n"
        "main()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 1
    assert "pip install 'prefixcache[cli]'" in out.stderr


def test_every_public_name_still_imports() -> None:
    """The facade: ``__all__`` has no duplicates, ``import *`` gives exactly it, and every
    class and function in it is prefixcache's own and documented."""
    import inspect

    import prefixcache

    names = prefixcache.__all__
    assert len(names) == len(set(names))
    star: dict[str, object] = {}
    exec("from prefixcache import *", star)
    assert set(star) - {"__builtins__"} == set(names)
    for name in names:
        obj = getattr(prefixcache, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__.startswith("prefixcache"), (name, obj.__module__)
            assert (obj.__doc__ or "").strip(), f"{name} has no docstring"
