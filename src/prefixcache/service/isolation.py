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
from pathlib import Path
from typing import Literal

from .auth import Principal

Isolation = Literal["tenant", "user", "shared"]


def cache_salt(secret: str, principal: Principal, isolation: Isolation) -> str | None:
    if isolation == "shared":
        return None
    scope = f"tenant:{principal.tenant}" if isolation == "tenant" else f"user:{principal.user_id}"
    return hmac.new(secret.encode(), scope.encode(), hashlib.sha256).hexdigest()[:32]


def load_or_create_secret(path: Path) -> str:
    """The server secret kept next to the database (created once, mode 0600)."""
    if path.is_file():
        text = path.read_text(encoding="utf-8").strip()
        if len(text) >= 32:
            return text
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    return secret
