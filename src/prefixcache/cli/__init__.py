"""The ``prefixcache`` command line (the ``cli`` extra: typer and rich).

One module per command group; each command is a few lines that call its subsystem.
Exit codes: 0 success, 1 a runtime failure (a ``PrefixCacheError``, findings, a failed
check), 2 a usage error (unknown option, bad argument).
"""

from __future__ import annotations

import sys


def main() -> None:
    """Console-script entry point: names the missing extra instead of a traceback."""
    from .._extras import require
    from ..errors import MissingExtraError

    try:
        require("cli", "The prefixcache command line")
    except MissingExtraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    from .app import run

    run()
