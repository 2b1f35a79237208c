"""Request bodies bounded while they stream in: a body over its route's limit is refused with 413
before any route reads, parses or authenticates it (Starlette reads any size otherwise)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import Response

from connector.errors import operation_outcome

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]
ASGIApp = Callable[[Scope, Receive, Send], Any]


class BodyTooLarge(HTTPException):
    """Raised from the body stream. An HTTPException, so that FastAPI's body parsing passes it
    on instead of turning it into a 400; the app answers it with `refusal`."""

    def __init__(self, path: str, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")
        self.path, self.limit = path, limit


def refusal(exc: BodyTooLarge) -> Response:
    body, media = _refusal(exc.path, exc.limit)
    return Response(body, status_code=413, media_type=media.decode(),
                    headers={"Connection": "close"})


def _refusal(path: str, limit: int) -> tuple[bytes, bytes]:
    text = f"request body larger than {limit} bytes"
    if path.startswith("/fhir/"):  # FHIR callers get an OperationOutcome
        body = json.dumps(operation_outcome(text, code="too-costly")).encode()
        return body, b"application/fhir+json"
    return text.encode(), b"text/plain; charset=utf-8"


class BodyLimit:
    """ASGI middleware; `limit_for(path)` is the most bytes a request to that path may send."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        limit = self.limit_for(path)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(send, path, limit)
            return
        seen = 0
        started = False

        async def bounded_receive() -> Message:
            nonlocal seen
            message: Message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(path, limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message.get("type") == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded_receive, watched_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send, path, limit)

    @staticmethod
    async def _refuse(send: Send, path: str, limit: int) -> None:
        body, media = _refusal(path, limit)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", media),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
