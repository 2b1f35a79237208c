"""The admin API's token checked before anything else: FastAPI reads and parses a request's body
before it runs the route's dependencies, so without this gate anyone could make the service read
a body (up to the size limit, as slowly as they like) before being told 401."""

from __future__ import annotations

import json
from collections.abc import Callable

from outreach.api.limits import ASGIApp, Receive, Scope, Send

PREFIX = "/admin"
UNAUTHORIZED = "a valid admin bearer token is required"


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, as FastAPI's HTTPBearer reads it."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token if scheme.lower() == "bearer" and token else None
    return None


class AdminGate:
    """ASGI middleware; `caller(token)` is the admin's name for a valid token, else None. Routes
    still resolve the caller themselves: the gate only answers the rest early."""

    def __init__(self, app: ASGIApp, caller: Callable[[str | None], str | None]) -> None:
        self.app, self.caller = app, caller

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] == "http" and (path == PREFIX or path.startswith(PREFIX + "/")) \
                and self.caller(bearer_token(scope.get("headers") or [])) is None:
            body = json.dumps({"detail": UNAUTHORIZED}).encode()
            # Connection: close, since the body is left unread on the socket.
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()),
                                    (b"www-authenticate", b"Bearer"),
                                    (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
