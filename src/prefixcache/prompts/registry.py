"""The prompt registry: Markdown prompts addressed by dotted keys, composed with Jinja2.

The key ``default.agent.system.main`` is the file ``default/agent.system.main.md``:
the first dotted part is the folder, the rest is the file name. Several directories
can be layered; the first one that has a file wins, so a user's directory listed
before the built-in one overrides single prompts and leaves the rest in place.
"""

from __future__ import annotations

import difflib
import errno
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import jinja2

from ..errors import (
    PromptFileError,
    PromptInputTypeError,
    PromptNotFoundError,
    PromptRenderError,
)

BUILTIN_PROMPT_DIR = Path(__file__).parent / "data"
PROMPT_SUFFIX = ".md"


def key_to_relpath(key: str, searched: Sequence[str] = ()) -> str:
    """``default.agent.system.main`` -> ``default/agent.system.main.md``."""
    if not isinstance(key, str):
        raise PromptInputTypeError(f"a prompt key must be a str, got {type(key).__name__}: {key!r}")
    key = key.strip()
    folder, sep, rest = key.partition(".")
    if not sep or not folder or not rest or "/" in key or "\\" in key or "\0" in key:
        raise PromptNotFoundError(key, [], searched)
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
    def _scan(self) -> tuple[dict[str, Path], list[PromptFileError]]:
        """Every visible key (first layer wins) and every problem met on the way.

        A folder named ``x.md``, a file that cannot be read, a symlink loop or a missing
        directory is reported, never crashes the listing; the rest is still listed."""
        found: dict[str, Path] = {}
        problems: list[PromptFileError] = []
        for directory in self.directories:
            try:
                folders = sorted(directory.iterdir())
            except FileNotFoundError:
                problems.append(PromptFileError(directory, "prompt directory does not exist"))
                continue
            except NotADirectoryError:
                problems.append(PromptFileError(directory, "is a file, not a prompt directory"))
                continue
            except OSError as exc:
                problems.append(PromptFileError(directory, os_problem(exc)))
                continue
            for folder in folders:
                if not _is_dir(folder, problems):
                    continue
                try:
                    entries = sorted(folder.iterdir())
                except OSError as exc:
                    problems.append(PromptFileError(folder, os_problem(exc)))
                    continue
                for path in entries:
                    if not path.name.endswith(PROMPT_SUFFIX):
                        continue
                    problem = file_problem(path)
                    if problem is not None:
                        problems.append(PromptFileError(path, problem))
                        continue
                    key = relpath_to_key(path.relative_to(directory).as_posix())
                    found.setdefault(key, path)
        return found, problems

    def keys(self) -> list[str]:
        """Every usable prompt key visible through the layers, sorted."""
        return sorted(self._scan()[0])

    def problems(self) -> list[PromptFileError]:
        """What could not be used: missing directories, unreadable or non-UTF-8 files,
        folders named ``*.md``, symlink loops."""
        return self._scan()[1]

    def has(self, key: str) -> bool:
        try:
            return self.path_of(key) is not None
        except PromptNotFoundError:
            return False

    def path_of(self, key: str) -> Path:
        """The file that serves ``key`` (the first layer that has it)."""
        rel = key_to_relpath(key, [str(d) for d in self.directories])
        for directory in self.directories:
            candidate = directory / rel
            if candidate.is_file():
                return candidate
        raise self._not_found(key)

    def source(self, key: str) -> str:
        """The raw template text of ``key`` (for lint and `prompts show --raw`)."""
        return read_prompt_file(self.path_of(key))

    def files(self) -> Iterable[tuple[str, Path]]:
        """(key, path) of each usable prompt, the winning layer only."""
        yield from sorted(self._scan()[0].items())

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
        except UnicodeDecodeError as exc:
            path = self._path_or_rel(key)
            raise PromptFileError(
                path, f"is not UTF-8 text (byte {exc.start}); save it as UTF-8"
            ) from exc
        except OSError as exc:
            raise PromptFileError(self._path_or_rel(key), os_problem(exc)) from exc

    def render(self, key: str, /, **variables: Any) -> str:
        """Render ``key`` with ``variables``; every failure raises, nothing is returned raw."""
        return self.render_template(self.template(key), key, variables)

    def render_template(
        self, template: jinja2.Template, key: str, variables: dict[str, Any]
    ) -> str:
        """Render a loaded template; every failure is a ``PromptRenderError`` naming the
        file, and for an undefined variable, the variables that were passed."""
        where = f"Prompt {key!r} ({template.filename or key})"
        try:
            return template.render(**variables)
        except jinja2.UndefinedError as exc:
            passed = ", ".join(sorted(variables)) or "none"
            raise PromptRenderError(
                f"{where} uses a variable that was not passed: {exc.message}. Variables "
                f"passed: {passed}. Pass it, or remove it from the template."
            ) from exc
        except jinja2.TemplateNotFound as exc:
            raise PromptRenderError(
                f"{where} includes {exc.name!r}, which does not exist. Fix the include."
            ) from exc
        except UnicodeDecodeError as exc:
            raise PromptRenderError(f"{where} includes a file that is not UTF-8 text.") from exc
        except (jinja2.TemplateError, RecursionError) as exc:
            raise PromptRenderError(f"{where} failed to render: {exc!r}") from exc
        except (TypeError, ValueError, ArithmeticError, AttributeError, KeyError) as exc:
            raise PromptRenderError(
                f"{where} failed to render: {type(exc).__name__}: {exc}"
            ) from exc

    def _path_or_rel(self, key: str) -> str:
        try:
            return str(self.path_of(key))
        except PromptNotFoundError:
            return key_to_relpath(key)

    def _not_found(self, key: str) -> PromptNotFoundError:
        close = difflib.get_close_matches(key, self.keys(), n=3, cutoff=0.5)
        return PromptNotFoundError(key, close, [str(d) for d in self.directories])


def os_problem(exc: OSError, path: Path | None = None) -> str:
    """What an OSError on a prompt file means, in words (a dangling link when ``path``
    is a symlink to nothing)."""
    if exc.errno == errno.ELOOP:
        return "is a symlink loop"
    if path is not None and isinstance(exc, FileNotFoundError) and path.is_symlink():
        return "is a dangling symlink"
    if isinstance(exc, PermissionError):
        return "cannot be read (permission denied)"
    return f"cannot be read ({exc.strerror or exc})"


def _is_dir(path: Path, problems: list[PromptFileError]) -> bool:
    try:
        return stat.S_ISDIR(path.stat().st_mode)
    except OSError as exc:
        if path.is_symlink():
            problems.append(PromptFileError(path, os_problem(exc, path)))
        return False


def entry_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable regular file (``None``: it is one); its content
    is not read here."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return os_problem(exc, path)
    if stat.S_ISDIR(mode):
        return f"is a folder, not a prompt file (rename it: folders cannot end in {PROMPT_SUFFIX})"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a FIFO, socket or device)"
    return None


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a prompt file (``None``: it can)."""
    problem = entry_problem(path)
    if problem is not None:
        return problem
    try:
        read_prompt_file(path)
    except PromptFileError as exc:
        return exc.problem
    return None


def read_prompt_file(path: Path) -> str:
    """A prompt file's text (UTF-8); any failure is a ``PromptFileError`` naming it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PromptFileError(path, os_problem(exc)) from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        hint = " (it looks like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise PromptFileError(
            path, f"is not UTF-8 text{hint} (byte {exc.start}); save it as UTF-8"
        ) from exc
