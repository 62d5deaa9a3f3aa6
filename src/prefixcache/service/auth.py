"""API keys: ``pc_<id>_<secret>``. The id is public and indexes the row; only the
SHA-256 of the secret is stored, and it is compared in constant time. A key is shown once,
when it is created, and never logged."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .db import ApiKey, Tenant, User, utcnow

KEY_PATTERN = re.compile(r"^pc_([0-9a-f]{16})_([A-Za-z0-9_-]{20,100})$")
#: tenants, users, session ids and task ids: ASCII, no '/', at most 64 characters
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Principal:
    """Who is calling: from the API key, never from the request body."""

    key_id: str
    tenant: str
    user: str
    #: tools the user may use; None: every tool of the agent
    tools: tuple[str, ...] | None
    #: sees every user's prompt text and the engine-wide figures on the dashboard
    admin: bool = False

    @property
    def user_id(self) -> str:
        return f"{self.tenant}/{self.user}"


def bearer_key(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header (None without one)."""
    if not authorization or not authorization.lower().startswith("bearer "):
        return None
    return authorization[7:].strip()


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_name(kind: str, value: str) -> str:
    if not NAME_PATTERN.match(value):
        raise ValueError(
            f"{kind} {value!r} must be 1-64 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit"
        )
    return value


async def create_key(
    db: AsyncSession,
    tenant: str,
    user: str,
    tools: list[str] | None = None,
    admin: bool = False,
) -> str:
    """Create (tenant, user) if new and a key for them; returns the key, shown once."""
    check_name("tenant", tenant)
    check_name("user", user)
    if await db.get(Tenant, tenant) is None:
        db.add(Tenant(id=tenant))
        await db.flush()
    user_id = f"{tenant}/{user}"
    if await db.get(User, user_id) is None:
        db.add(User(id=user_id, tenant_id=tenant, name=user))
        await db.flush()
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    db.add(ApiKey(id=key_id, secret_hash=_hash(secret), user_id=user_id, tools=tools, admin=admin))
    await db.commit()
    return f"pc_{key_id}_{secret}"


async def authenticate(db: AsyncSession, key: str) -> Principal | None:
    """The principal of a valid key (one indexed lookup; no cache, so a revoked key
    stops working at once, on every instance)."""
    match = KEY_PATTERN.match(key)
    if match is None:
        return None
    key_id, secret = match.groups()
    row = (
        await db.execute(
            select(ApiKey, User.tenant_id, User.name)
            .join(User, User.id == ApiKey.user_id)
            .where(ApiKey.id == key_id)
        )
    ).first()
    expected = row[0].secret_hash if row is not None else _hash("no-such-key")
    valid = hmac.compare_digest(expected, _hash(secret))
    if row is None or not valid or row[0].revoked_at is not None:
        return None
    return _principal(row[0], row[1], row[2])


def _principal(key: ApiKey, tenant: str, user: str) -> Principal:
    tools = tuple(key.tools) if key.tools is not None else None
    return Principal(key.id, tenant, user, tools, bool(key.admin))


async def principal_for_key_id(db: AsyncSession, key_id: str) -> Principal | None:
    """The principal of a key that is still valid, by its public id (for a signed
    dashboard session, which holds the id, never the key)."""
    row = await db.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        return None
    user = await db.get(User, row.user_id)
    if user is None:
        return None
    return _principal(row, user.tenant_id, user.name)


async def revoke_key(db: AsyncSession, key_id: str) -> bool:
    row = await db.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    await db.commit()
    return True


async def list_keys(db: AsyncSession) -> list[ApiKey]:
    return list((await db.execute(select(ApiKey).order_by(ApiKey.created_at))).scalars())
