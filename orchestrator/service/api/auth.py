"""Bearer-token auth of the API (`MATHRL_API_TOKEN`), as ASGI middleware.

Middleware rather than a per-route dependency: every route, including ones added later, is
closed unless it is listed in `PUBLIC`, so forgetting a dependency cannot open one.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Receive, Scope, Send

PUBLIC_PATHS = frozenset({"/health", "/", "/docs", "/docs/oauth2-redirect", "/redoc",
                          "/openapi.json"})
"""Readable without the token (GET/HEAD): the health check (compose and load balancers probe
it), the dashboard page and its static files (a browser cannot send a header when it opens a
page; the page then asks for the token), and the API docs. None of them hold run data."""
PUBLIC_PREFIX = "/static/"
STREAM = re.compile(r"^/runs/[^/]+/events$")
"""The SSE stream also takes `?token=`: a browser's EventSource cannot set headers."""


def token_matches(given: str, token: str) -> bool:
    # Constant-time: how long a wrong guess takes says nothing about the right token.
    return hmac.compare_digest(given.encode(), token.encode())


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def exposure_warning(host: str, token: str | None) -> str | None:
    """What `mathrl up` says when it serves beyond this machine with no token."""
    if token or is_loopback(host):
        return None
    return (f"the API listens on {host} without a token: anyone who can reach it can submit "
            "and cancel runs; set MATHRL_API_TOKEN (the CLI and dashboard then send it)")


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, param = value.decode("latin-1").partition(" ")
            return param.strip() if scheme.lower() == "bearer" else None
    return None


def _query_token(scope: Scope) -> str | None:
    """The `token` query parameter, removed from the scope so that neither the route nor the
    access log (uvicorn logs the scope's query string) ever sees it."""
    pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    found = [v for k, v in pairs if k == "token"]
    if not found:
        return None
    scope["query_string"] = urlencode([(k, v) for k, v in pairs if k != "token"]).encode()
    return found[-1]


class BearerAuth:
    """401 unless the request carries `Authorization: Bearer <token>` (or is public)."""

    def __init__(self, app: ASGIApp, token: str):
        self.app, self.token = app, token

    def _public(self, scope: Scope) -> bool:
        path = scope.get("path", "")
        return scope.get("method") in ("GET", "HEAD") and (
            path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIX))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._public(scope):
            return await self.app(scope, receive, send)
        given = _bearer(scope)
        if STREAM.match(scope.get("path", "")):
            query = _query_token(scope)  # stripped from the scope even when a header came
            given = given if given is not None else query
        if given is not None and token_matches(given, self.token):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        body = json.dumps({"detail": "missing or wrong bearer token (MATHRL_API_TOKEN)"})
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body.encode()})
