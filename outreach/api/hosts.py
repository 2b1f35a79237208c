"""Only the host names this service is known by (OUTREACH_ALLOWED_HOSTS): a request naming
another Host is refused before routing, so nothing can be steered by it."""

from __future__ import annotations

from collections.abc import Callable

from outreach.api.limits import ASGIApp, Receive, Scope, Send


class HostCheck:
    """ASGI middleware; `allowed()` is read per request (settings may come after the app)."""

    def __init__(self, app: ASGIApp, allowed: Callable[[], list[str]]) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hosts = self.allowed() if scope["type"] in ("http", "websocket") else []
        if hosts:
            header = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            name = header.rsplit(":", 1)[0] if not header.endswith("]") else header
            if name.lower() not in {h.lower() for h in hosts}:
                body = b"unknown host"
                await send({"type": "http.response.start", "status": 400,
                            "headers": [(b"content-type", b"text/plain"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
