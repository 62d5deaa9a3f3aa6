"""Every reference in the docs is checked: links to files of the repository, paths
named in backticks (``src/...``, ``prompts/inputs.py``, ``tests/...``), dotted names
(``prefixcache.llm.sse``) and functions or classes named as calls (``explain()``) or
with their module (``prompts/inputs.py`` ``normalize_tools``) must exist."""

from __future__ import annotations

import ast
import importlib
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "prefixcache"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: where a path named in the docs may be relative to
BASES = (
    ROOT,
    PACKAGE,
    ROOT / "docs",
    ROOT / "src",
    PACKAGE / "prompts",
    PACKAGE / "prompts" / "data",
)
#: files a run writes (named in the docs, not in the repository)
GENERATED = {"report.md", "results.json", "trace.jsonl"}
#: files the docs name as absent on purpose ("there is no `alembic.ini`")
GENERATED |= {"alembic.ini"}
EXTENSIONS = (".py", ".md", ".yaml", ".yml", ".ini", ".toml", ".json", ".png", ".txt", ".sh")
#: call-like names that are not prefixcache's (Python's, vLLM's, the guide's platform's)
EXTERNAL_CALLS = {
    "now",
    "random",
    "hash",
    "str",
    "sorted",
    "len",
    "list",
    "repr",
    "anext",
    "execute_task",
    "get_prompt_template",
    "KVCacheManager",
    "find_longest_cache_hit",
}

LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
CODE = re.compile(r"`([^`\n]+)`")
PATH = re.compile(r"^(?:\.?/)?[\w.\-]+(?:/[\w.\-]*)+$|^[\w\-]+\.(?:py|md|yaml|yml|ini|toml)$")
DOTTED = re.compile(r"^prefixcache(?:\.\w+)+$")
CALL = re.compile(r"^(?:[\w.]+\.)?(\w+)\([\w\s,=.'\"-]*\)$")


@cache
def defined_names() -> frozenset[str]:
    """Every function, class, method and module-level name of the package and benchmarks."""
    names: set[str] = set()
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
    return frozenset(names)


@cache
def repository_files() -> frozenset[str]:
    """The names of the repository's files and folders (for one named without its parent)."""
    roots = (ROOT / "src", ROOT / "tests", ROOT / "benchmarks", ROOT / "docs")
    return frozenset(
        p.name for root in roots for p in root.rglob("*") if "__pycache__" not in p.parts
    )


def _exists(ref: str, doc: Path) -> bool:
    ref = ref.rstrip("/").removeprefix("./")
    if any(ch in ref for ch in "*<>{}$") or ref.startswith(("http:", "https:", "~", "/")):
        return True  # a pattern, a placeholder, a URL or a route, not a file of the repository
    if "/" not in ref:
        named = ref in repository_files() or ref in GENERATED
        return named or any((base / ref).is_dir() for base in (doc.parent, *BASES))
    return any((base / ref).exists() for base in (doc.parent, *BASES))


def _is_path(code: str) -> bool:
    return bool(PATH.match(code)) and (code.endswith("/") or code.endswith(EXTENSIONS))


def _dotted_exists(name: str) -> bool:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def problems(doc: Path) -> list[str]:
    text = doc.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # code blocks: run elsewhere
    found = []
    for target in LINK.findall(text):
        if not target.startswith(("http:", "https:", "mailto:")) and not _exists(target, doc):
            found.append(f"link to {target}")
    for code in CODE.findall(text):
        code = code.strip()
        if _is_path(code):
            if not _exists(code, doc):
                found.append(f"path {code}")
        elif DOTTED.match(code):
            if not _dotted_exists(code):
                found.append(f"name {code}")
        elif (m := CALL.match(code)) and m.group(1) not in EXTERNAL_CALLS | defined_names():
            found.append(f"call {code}")
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_reference_in_the_docs_exists(doc: Path) -> None:
    assert problems(doc) == []


def test_the_reference_check_can_fail(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "See [gone](gone.md), `src/prefixcache/nothing.py`, `prefixcache.llm.nope`, "
        "`no_such_function()`; fine: `src/prefixcache/llm/sse.py`, `prefixcache.llm.sse`, "
        "`explain()`.\n"
    )
    assert problems(doc) == [
        "link to gone.md",
        "path src/prefixcache/nothing.py",
        "name prefixcache.llm.nope",
        "call no_such_function()",
    ]


CODE_PATH = re.compile(r"``([\w.\-]+(?:/[\w.\-]+)+\.(?:py|md|yaml))``")


def test_every_path_named_in_the_code_exists() -> None:
    """Docstrings and comments name files as ``folder/file.py``; each must exist."""
    sources = [*PACKAGE.rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
    stale = [
        f"{path.relative_to(ROOT)}: {ref}"
        for path in sources
        for ref in CODE_PATH.findall(path.read_text(encoding="utf-8"))
        if not _exists(ref, path)
    ]
    assert stale == []
