"""``/dashboard``: the tenant's live figures as one HTML page.

Signing in: ``POST /dashboard/login`` with an API key (a plain HTML form) sets a signed,
HttpOnly, SameSite=Strict cookie holding the key's public id and an expiry, never the key
itself; every view checks that the key is still valid, so a revoked key signs its
dashboard out. ``Authorization: Bearer <key>`` works too (scripts, tests).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ..auth import Principal, authenticate, bearer_key, principal_for_key_id
from ..routes.deps import State
from ..state import ServiceState
from .data import BreakExplainer, gather
from .render import login_page, page

router = APIRouter(tags=["dashboard"])
COOKIE = "prefixcache_dashboard"
SESSION_S = 12 * 3600
#: no scripts at all; inline styles and the page's own form only
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def _sign(secret: str, key_id: str, expires: int) -> str:
    mac = hmac.new(secret.encode(), f"dashboard|{key_id}|{expires}".encode(), hashlib.sha256)
    return mac.hexdigest()[:40]


def session_cookie(secret: str, key_id: str, now: float | None = None) -> str:
    expires = int((now or time.time()) + SESSION_S)
    return f"{key_id}.{expires}.{_sign(secret, key_id, expires)}"


def cookie_key_id(secret: str, value: str, now: float | None = None) -> str | None:
    """The key id of a valid, unexpired cookie; None otherwise."""
    parts = value.split(".")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    key_id, expires, mac = parts[0], int(parts[1]), parts[2]
    if expires < (now or time.time()):
        return None
    return key_id if hmac.compare_digest(mac, _sign(secret, key_id, expires)) else None


async def dashboard_principal(
    request: Request, state: State, authorization: Annotated[str | None, Header()] = None
) -> Principal | None:
    async with state.sessions() as db:
        key = bearer_key(authorization)
        if key is not None:
            return await authenticate(db, key)
        value = request.cookies.get(COOKIE)
        key_id = cookie_key_id(state.secret, value) if value else None
        return await principal_for_key_id(db, key_id) if key_id else None


Viewer = Annotated[Principal | None, Depends(dashboard_principal)]


def _explainer(request: Request, state: ServiceState) -> BreakExplainer:
    explainer: BreakExplainer | None = getattr(request.app.state, "dashboard_explainer", None)
    if explainer is None:
        explainer = BreakExplainer(state)
        request.app.state.dashboard_explainer = explainer
    return explainer


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard(
    request: Request,
    state: State,
    viewer: Viewer,
    refresh: Annotated[
        int, Query(ge=0, le=3600, description="Seconds between reloads; 0: off")
    ] = 10,
) -> Response:
    """The tenant's live cache figures (HTML); a sign-in form without a valid key."""
    if viewer is None:
        return HTMLResponse(login_page(), status_code=401, headers=HEADERS)
    data = await gather(state, _explainer(request, state), viewer)
    return HTMLResponse(page(data, refresh), headers=HEADERS)


@router.post("/dashboard/login", response_class=HTMLResponse)
async def login(request: Request, state: State) -> Response:
    body = (await request.body()).decode("utf-8", "replace")
    key = (parse_qs(body).get("key") or [""])[0].strip()
    async with state.sessions() as db:
        principal = await authenticate(db, key) if key else None
    if principal is None:
        message = (
            "That API key is not valid (unknown, revoked or mistyped)."
            if key
            else ("Paste an API key.")
        )
        return HTMLResponse(login_page(message), status_code=401, headers=HEADERS)
    response = RedirectResponse("/dashboard", status_code=303, headers=HEADERS)
    response.set_cookie(
        COOKIE,
        session_cookie(state.secret, principal.key_id),
        max_age=SESSION_S,
        path="/dashboard",
        httponly=True,
        samesite="strict",
    )
    return response


@router.post("/dashboard/logout")
async def logout() -> Response:
    response = RedirectResponse("/dashboard", status_code=303, headers=HEADERS)
    response.delete_cookie(COOKIE, path="/dashboard")
    return response
