"""Deadlines on each request: a body that trickles in is cut off with 408, a request not done in
time with 503 (if its response had not started), so that no slow or stuck client holds the API
indefinitely."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from starlette.exceptions import HTTPException

from outreach.api.access_log import RedactPatientLinks, masked
from outreach.api.limits import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)
log.addFilter(RedactPatientLinks())  # a path may be a preference link, whose token is a key

# Requests still running after their 503 (work in a thread cannot be stopped): kept referenced
# until they end, so that the event loop does not drop them half-way.
_abandoned: set[asyncio.Task[None]] = set()


class BodyTimeout(HTTPException):
    """Raised from the body stream. An HTTPException, so that FastAPI's body parsing passes it
    on instead of turning it into a 400; the app answers it with `answer`."""

    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"request body not received within {seconds:g} seconds",
                         headers={"Connection": "close"})


class Deadlines:
    """ASGI middleware; `limits()` gives (body seconds, request seconds), read per request
    (settings may come after the app)."""

    def __init__(self, app: ASGIApp, limits: Callable[[], tuple[float, float]]) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_seconds, request_seconds = self.limits()
        loop = asyncio.get_running_loop()
        body_by = loop.time() + body_seconds
        body_done = False
        started = answered = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:  # after the body, receive() waits for a disconnect: no deadline
                message: Message = await receive()
                return message
            try:
                message = await asyncio.wait_for(receive(), max(body_by - loop.time(), 0))
            except TimeoutError:
                log.warning("%s %s cut off: body not received within %g seconds",
                            scope.get("method"), masked(str(scope.get("path", ""))),
                            body_seconds)
                raise BodyTimeout(body_seconds) from None
            body_done = message.get("type") != "http.request" or not message.get("more_body")
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if answered:  # the request was given its 503 already: its late answer goes nowhere
                return
            started = started or message.get("type") == "http.response.start"
            await send(message)

        # The app runs as its own task: a route waiting on a thread cannot be cancelled until
        # the thread returns, and the caller must not wait for that.
        task = asyncio.ensure_future(self.app(scope, timed_receive, watched_send))
        try:
            done, _ = await asyncio.wait({task}, timeout=request_seconds)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task in done:
            try:
                task.result()
            except BodyTimeout as exc:
                if not started:
                    await answer(send, exc.status_code, exc.detail)
            return
        answered = True
        task.cancel()
        _abandoned.add(task)
        task.add_done_callback(_forget)
        log.warning("%s %s cut off: no response within %g seconds", scope.get("method"),
                    masked(str(scope.get("path", ""))), request_seconds)
        if not started:
            await answer(send, 503, f"no response within {request_seconds:g} seconds; "
                                    "try again later")


def _forget(task: asyncio.Task[None]) -> None:
    _abandoned.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.warning("a request cut off by its deadline failed afterwards: %s",
                    type(task.exception()).__name__)


async def answer(send: Send, status: int, text: str) -> None:
    """A plain-text answer that closes the connection (the rest of the body is not read)."""
    body = (text + "\n").encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
