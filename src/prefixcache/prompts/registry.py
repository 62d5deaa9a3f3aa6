"""The prompt registry: Markdown prompts addressed by dotted keys, composed with Jinja2.

The key ``default.agent.system.main`` is the file ``default/agent.system.main.md``:
the first dotted part is the folder, the rest is the file name. Several directories
can be layered; the first one that has a file wins, so a user's directory listed
before the built-in one overrides single prompts and leaves the rest in place.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import jinja2

from ..errors import PromptNotFoundError, PromptRenderError

BUILTIN_PROMPT_DIR = Path(__file__).parent / "data"
PROMPT_SUFFIX = ".md"


def key_to_relpath(key: str) -> str:
    """``default.agent.system.main`` -> ``default/agent.system.main.md``."""
    key = key.strip()
    folder, sep, rest = key.partition(".")
    if not sep or not folder or not rest or "/" in key or "\\" in key:
        raise PromptNotFoundError(key, [], [])
    return f"{folder}/{rest}{PROMPT_SUFFIX}"


def relpath_to_key(relpath: str) -> str:
    """``default/agent.system.main.md`` -> ``default.agent.system.main``."""
    folder, _, name = relpath.partition("/")
    return f"{folder}.{name.removesuffix(PROMPT_SUFFIX)}"


class PromptRegistry:
    """Layered prompt directories with strict Jinja2 rendering.

    Autoescape is off (prompts are not HTML) and undefined variables raise.
    """

    def __init__(self, directories: Sequence[Path | str] = (), *, include_builtin: bool = True):
        dirs = [Path(d) for d in directories]
        if include_builtin:
            dirs.append(BUILTIN_PROMPT_DIR)
        self.directories: tuple[Path, ...] = tuple(dirs)
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(d) for d in self.directories]),
            autoescape=False,
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            auto_reload=False,
        )

    # -- discovery -------------------------------------------------------
    def keys(self) -> list[str]:
        """Every prompt key visible through the layers, sorted."""
        found: set[str] = set()
        for directory in self.directories:
            if not directory.is_dir():
                continue
            for path in directory.glob(f"*/*{PROMPT_SUFFIX}"):
                found.add(relpath_to_key(path.relative_to(directory).as_posix()))
        return sorted(found)

    def has(self, key: str) -> bool:
        try:
            return self.path_of(key) is not None
        except PromptNotFoundError:
            return False

    def path_of(self, key: str) -> Path:
        """The file that serves ``key`` (the first layer that has it)."""
        rel = key_to_relpath(key)
        for directory in self.directories:
            candidate = directory / rel
            if candidate.is_file():
                return candidate
        raise self._not_found(key)

    def source(self, key: str) -> str:
        """The raw template text of ``key`` (for lint and `prompts show --raw`)."""
        return self.path_of(key).read_text(encoding="utf-8")

    def files(self) -> Iterable[tuple[str, Path]]:
        """(key, path) of each visible prompt, the winning layer only."""
        for key in self.keys():
            yield key, self.path_of(key)

    # -- rendering -------------------------------------------------------
    def template(self, key: str) -> jinja2.Template:
        try:
            rel = key_to_relpath(key)
        except PromptNotFoundError:
            raise self._not_found(key) from None
        try:
            return self._env.get_template(rel)
        except jinja2.TemplateNotFound as exc:
            if exc.name == rel:
                raise self._not_found(key) from None
            raise PromptRenderError(
                f"Prompt {key!r} includes {exc.name!r}, which does not exist in "
                f"{', '.join(map(str, self.directories))}. Fix the include path."
            ) from exc
        except jinja2.TemplateSyntaxError as exc:
            raise PromptRenderError(
                f"Prompt {key!r} has a template syntax error in {exc.filename}:{exc.lineno}: "
                f"{exc.message}"
            ) from exc

    def render(self, key: str, /, **variables: Any) -> str:
        """Render ``key`` with ``variables``; every failure raises, nothing is returned raw."""
        template = self.template(key)
        try:
            return template.render(**variables)
        except jinja2.UndefinedError as exc:
            raise PromptRenderError(
                f"Prompt {key!r} uses a variable that was not passed: {exc.message}. "
                "Pass it to get_prompt() or remove it from the template."
            ) from exc
        except jinja2.TemplateNotFound as exc:
            raise PromptRenderError(
                f"Prompt {key!r} includes {exc.name!r}, which does not exist. Fix the include."
            ) from exc
        except jinja2.TemplateError as exc:
            raise PromptRenderError(f"Prompt {key!r} failed to render: {exc}") from exc

    def _not_found(self, key: str) -> PromptNotFoundError:
        close = difflib.get_close_matches(key, self.keys(), n=3, cutoff=0.5)
        return PromptNotFoundError(key, close, [str(d) for d in self.directories])
