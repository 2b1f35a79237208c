"""Slow and stuck requests on the real server (issue 14): headers or a body trickled in a byte at
a time are cut off with 408, a request whose handling hangs gets a 503 while the server goes on
serving, an idle keep-alive connection is closed, and the admin API says 401 to a caller without
a token before it reads a byte of the body."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import create_engine, func, select, text

from outreach.core.ports import Runtime
from outreach.core.settings import load_settings
from outreach.store.models import ResourceChangeRecord
from tests.conftest import WEBHOOK_SECRET, RuntimeFactory
from tests.support.api_server import ApiServer
from tests.support.twilio_server import ACCOUNT_SID, AUTH_TOKEN

ADMIN = "admin-token-0123456789abcdef"
CONNECTION = {"header_timeout_seconds": 1.0, "keep_alive_seconds": 1}


@pytest.fixture(scope="module")
def api_server() -> Iterator[ApiServer]:
    """The real server, with second-long connection limits (header and keep-alive deadlines)."""
    server = ApiServer(load_settings(**CONNECTION))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def rt(make_runtime: RuntimeFactory, api_server: ApiServer) -> Runtime:
    return make_runtime(public_url=api_server.url, admin_tokens=f"ops={ADMIN}",
                        twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN,
                        twilio_from="+15555550100", preferences_secret="p" * 32,
                        body_timeout_seconds=1.0, request_timeout_seconds=2.0)


def _connect(server: ApiServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.settimeout(10)
    return sock


def _answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    with contextlib.suppress(ConnectionResetError):  # closed with our bytes unread: a reset
        while chunk := sock.recv(65536):
            received += chunk
    return received


def _one_response(sock: socket.socket) -> bytes:
    """One whole response on a connection kept alive (head, then Content-Length bytes)."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return received


def _trickle(sock: socket.socket, data: bytes, every: float = 0.2) -> float:
    """Send one byte every `every` seconds until the server stops taking them; the seconds the
    connection was held."""
    started = time.monotonic()
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except OSError:  # closed on us: what we want
            break
        time.sleep(every)
    return time.monotonic() - started


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def _request(method: str, path: str, length: int, **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {length}",
             *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize(("path", "headers", "media"), [
    # The rest-hook with its secret: authenticated, so its body is read...
    ("/fhir/notify/Appointment/a1", {"Content_Type": "application/fhir+json",
                                     "X_Outreach_Secret": WEBHOOK_SECRET},
     b"application/fhir+json"),
    # ...and Twilio's webhook, whose signature covers the form: read before it can be checked.
    ("/channels/twilio/inbound", {"Content_Type": "application/x-www-form-urlencoded",
                                  "X_Twilio_Signature": "c2lnbmVk"}, b"text/plain"),
])
def test_a_body_trickled_in_is_cut_off_with_408(
    rt: Runtime, api_server: ApiServer, path: str, headers: dict[str, str], media: bytes
) -> None:
    body = b'{"resourceType":"Appointment","id":"a1","status":"booked"}'
    with _connect(api_server) as sock:
        sock.sendall(_request("PUT" if "notify" in path else "POST", path, len(body), **headers))
        held = _trickle(sock, body)
        response = _answer(sock)

    assert _status(response) == 408, response
    assert media in response.lower() and b"connection: close" in response.lower()
    assert held < 2.5, f"held {held:.1f} s for a 1 s body deadline"
    with rt.sessions() as session:
        assert session.scalar(select(func.count(ResourceChangeRecord.id))) == 0


def test_a_cut_off_preference_link_is_logged_without_its_token(
    rt: Runtime, api_server: ApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    link = rt.settings.preferences_link("Patient/p1", "en", datetime.now(UTC))
    assert link is not None
    path = urlsplit(link).path
    with _connect(api_server) as sock:
        sock.sendall(_request("POST", path, 100,
                              Content_Type="application/x-www-form-urlencoded"))
        _trickle(sock, b"channel=sms&" * 9)
        response = _answer(sock)

    assert _status(response) == 408, response
    cut_off = [r.getMessage() for r in caplog.records if "cut off" in r.getMessage()]
    assert cut_off == ["POST /p/… cut off: body not received within 1 seconds"]


def test_the_rest_of_a_body_nobody_reads_cannot_hold_the_connection(
    rt: Runtime, api_server: ApiServer
) -> None:
    # A forged preference link is answered at once, its body left unread: trickling the rest
    # of it keeps the connection no longer than the header deadline.
    with _connect(api_server) as sock:
        sock.sendall(_request("POST", "/p/forged", 1000,
                              Content_Type="application/x-www-form-urlencoded"))
        held = _trickle(sock, b"a" * 1000)
        response = _answer(sock)

    assert _status(response) == 404, response
    assert held < 2.5, f"held {held:.1f} s for a 1 s deadline"


def test_headers_trickled_in_are_cut_off_with_408(rt: Runtime, api_server: ApiServer) -> None:
    with _connect(api_server) as sock:
        held = _trickle(sock, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 50)
        response = _answer(sock)

    assert _status(response) == 408, response
    assert held < 2.5, f"held {held:.1f} s for a 1 s header deadline"


def test_the_next_request_on_a_kept_alive_connection_has_the_same_header_deadline(
    rt: Runtime, api_server: ApiServer
) -> None:
    with _connect(api_server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = _one_response(sock)
        assert _status(first) == 200, first
        held = _trickle(sock, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 50)
        response = _answer(sock)

    assert _status(response) == 408, response
    assert held < 2.5


def test_a_request_head_growing_past_16_kb_is_refused(rt: Runtime, api_server: ApiServer) -> None:
    # Sent in pieces, as a client that never ends its headers would: the server holds at most
    # 16 KB of an unfinished head per connection.
    refused_after = 0
    with _connect(api_server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        with contextlib.suppress(OSError):  # closed while sending: refused all the same
            for n in range(40):
                sock.sendall(f"X-Big-{n}: ".encode() + b"a" * 1000 + b"\r\n")
                refused_after += 1
                time.sleep(0.01)
        response = _answer(sock)

    assert _status(response) == 400, response
    assert refused_after < 40


def test_an_idle_kept_alive_connection_is_closed(rt: Runtime, api_server: ApiServer) -> None:
    with _connect(api_server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert _status(_one_response(sock)) == 200
        started = time.monotonic()
        assert sock.recv(65536) == b""  # closed by the server

    assert time.monotonic() - started < 2.5


def test_a_request_whose_handling_hangs_gets_503_and_the_server_goes_on(
    rt: Runtime, api_server: ApiServer
) -> None:
    # The admin API's journey list waits on a table another transaction holds locked.
    locker = create_engine(rt.settings.database_url)
    release = threading.Event()

    def hold_lock(locked: threading.Event) -> None:
        with locker.begin() as conn:
            conn.execute(text("LOCK TABLE journey_controls IN ACCESS EXCLUSIVE MODE"))
            locked.set()
            release.wait(30)

    locked = threading.Event()
    holder = threading.Thread(target=hold_lock, args=(locked,))
    holder.start()
    try:
        assert locked.wait(10)
        started = time.monotonic()
        stuck = httpx.get(f"{api_server.url}/admin/journeys", timeout=10,
                          headers={"Authorization": f"Bearer {ADMIN}"})
        waited = time.monotonic() - started
        assert stuck.status_code == 503, stuck.text
        assert "no response within 2 seconds" in stuck.text
        assert 1.9 < waited < 4, waited
        # Still serving while the stuck request's thread waits on.
        assert httpx.get(f"{api_server.url}/healthz", timeout=5).status_code == 200
    finally:
        release.set()
        holder.join(10)
        locker.dispose()
    after = httpx.get(f"{api_server.url}/admin/journeys", timeout=10,
                      headers={"Authorization": f"Bearer {ADMIN}"})
    assert after.status_code == 200


def test_the_admin_api_refuses_a_caller_without_a_token_before_reading_the_body(
    rt: Runtime, api_server: ApiServer
) -> None:
    path = "/admin/patients/p1/consent"
    for length, headers in [
        (60_000, {"Content_Type": "application/json"}),  # the body never comes
        (10**12, {"Content_Type": "application/json"}),  # nor would this one fit anywhere
        (60_000, {"Content_Type": "application/json", "Authorization": "Bearer " + "x" * 30}),
    ]:
        with _connect(api_server) as sock:
            started = time.monotonic()
            sock.sendall(_request("PUT", path, length, **headers))
            response = _answer(sock)
            answered = time.monotonic() - started
        assert _status(response) == 401, response
        assert b"www-authenticate: bearer" in response.lower()
        assert answered < 0.5, f"401 after {answered:.2f} s: the body was waited for"

    # With the token, the same request waits for its body (and gets the body deadline's 408).
    with _connect(api_server) as sock:
        started = time.monotonic()
        sock.sendall(_request("PUT", path, 60_000, Content_Type="application/json",
                              Authorization=f"Bearer {ADMIN}"))
        response = _answer(sock)
        answered = time.monotonic() - started
    assert _status(response) == 408, response
    assert answered > 0.9
