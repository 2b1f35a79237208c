"""How uvicorn serves the API: a connection whose request line and headers trickle in is closed
with 408 (and one trickling the rest of a body nobody reads, closed), an idle keep-alive
connection after a few seconds, an unfinished request head bounded in size. (Deadlines on the
body being read and on the response are the app's: outreach.api.deadlines.)"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from outreach.core.settings import Settings

log = logging.getLogger(__name__)

# An unfinished request head (line and headers) held per connection: more is a 400. (h11 counts
# what it buffers, so a head that arrives whole in one read may be larger.)
MAX_HEADER_BYTES = 16_384

_TOO_SLOW = b"request headers not received in time\n"
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: " + str(len(_TOO_SLOW)).encode() + b"\r\nconnection: close\r\n\r\n"
    + _TOO_SLOW)


class HeaderDeadline(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline whenever the connection waits on the client
    alone: for each request's line and headers (from the connection's start or the previous
    response), and for the rest of a body left unread when the request was answered early (a
    401, a 413). uvicorn has none: its keep-alive timer stops at the first byte, so a client
    sending a byte every few seconds would hold the connection for good."""

    header_seconds = 10.0
    _timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._waiting_on_client():  # the headers are in: the app has the request
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self._waiting_on_client():
            self._arm()  # the next request on this connection, or the rest of an unread body

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _waiting_on_client(self) -> bool:
        theirs = self.conn.their_state
        return theirs is h11.IDLE or (theirs is h11.SEND_BODY and self.conn.our_state is h11.DONE)

    def _arm(self) -> None:
        self._disarm()
        self._timer = self.loop.call_later(self.header_seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _too_slow(self) -> None:
        self._timer = None
        if self.transport.is_closing() or not self._waiting_on_client():
            return
        if self.conn.their_state is h11.IDLE:  # a request not yet begun: tell the client why
            log.warning("closed a connection: request headers not received within %g seconds",
                        self.header_seconds)
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


def uvicorn_config(app: Any, settings: Settings, *, host: str, port: int,
                   log_level: str = "info") -> uvicorn.Config:
    """The server for `outreach serve` (and the tests' real server), with the settings' limits."""
    protocol = type("HeaderDeadline", (HeaderDeadline,),
                    {"header_seconds": settings.header_timeout_seconds})
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http=protocol,
                          timeout_keep_alive=settings.keep_alive_seconds,
                          h11_max_incomplete_event_size=MAX_HEADER_BYTES)
