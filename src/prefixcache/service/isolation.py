"""Tenant isolation of the KV cache.

A prefix cache shared across tenants lets one tenant time another's prompts: a request
whose prefix is cached answers faster, which leaks whether someone sent that prefix
(CVE-2025-46570). vLLM's ``cache_salt`` is mixed into the hash of a request's first
block, so requests under different salts never share blocks. The service derives each
request's salt from the tenant (or the user) with a server secret (HMAC-SHA256), so a
salt can be neither guessed nor chosen by a caller.

The trade-off: each tenant warms its own copy of the static prompts (their first
request per agent is cold), and the KV cache holds one copy per active tenant.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from typing import Literal

from ..errors import ConfigError
from .auth import Principal

Isolation = Literal["tenant", "user", "shared"]


def cache_salt(secret: str, principal: Principal, isolation: Isolation) -> str | None:
    if isolation == "shared":
        return None
    scope = f"tenant:{principal.tenant}" if isolation == "tenant" else f"user:{principal.user_id}"
    return hmac.new(secret.encode(), scope.encode(), hashlib.sha256).hexdigest()[:32]


def load_or_create_secret(path: Path) -> str:
    """The server secret kept next to the database: created once (mode 0600, its folder
    0700), then read. A file others can read, or one too short, is an error, never
    replaced: a new secret would change every tenant's salt."""
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(
                f"The service secret {path} can be read by other users (mode {mode:o}); "
                f"run `chmod 600 {path}`."
            )
        text = path.read_text(encoding="utf-8").strip()
        if len(text.encode()) < 32:
            raise ConfigError(
                f"The service secret {path} has {len(text.encode())} bytes; it needs at least "
                "32. Put a longer one there (`python -c 'import secrets; "
                "print(secrets.token_hex(32))'`) or set service.secret."
            )
        return text
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, mode=0o700)
    secret = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it just now: use theirs
        time.sleep(0.2)
        return load_or_create_secret(path)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    return secret
