"""A local HTTP server shaped like Twilio's Messages API, and a signed-webhook sender.

Shapes follow Twilio's documented REST API (2010-04-01): `POST /Accounts/{Sid}/Messages.json`
with form fields To, From, Body, StatusCallback and HTTP basic auth (AccountSid:AuthToken);
201 with the Message resource (sid "SM…", status "queued"); errors as JSON
`{"code", "message", "more_info", "status"}` (21211 invalid To, 21610 unsubscribed recipient,
20003 authentication, 20429 too many requests); `GET …/Messages.json?To=&From=&DateSent>=`
lists messages. Webhooks it sends (status callbacks) carry MessageSid, MessageStatus, To, From,
AccountSid, ErrorCode, signed with X-Twilio-Signature.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx

from channels.signatures import twilio_signature

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "twilio-test-auth-token"
E164 = re.compile(r"^\+[1-9]\d{6,14}$")


@dataclass
class Scripted:
    status: int
    code: int


@dataclass
class TwilioState:
    messages: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)  # every create attempt
    script: list[Scripted] = field(default_factory=list)
    unsubscribed: set[str] = field(default_factory=set)
    latency: float = 0.0
    # A status to call back with before the create is answered: Twilio's callback can reach
    # the service before its API answer does.
    callback_first: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _error(status: int, code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "status": status,
            "more_info": f"https://www.twilio.com/docs/errors/{code}"}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as Twilio's API: no new connection per message
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms ACK wait

    def log_message(self, *_args: object) -> None:  # keep test output clean
        pass

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        expected = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        return self.headers.get("Authorization") == f"Basic {expected}"

    def _path_ok(self) -> bool:
        return urlparse(self.path).path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"

    def do_POST(self) -> None:
        if not self._path_ok():
            return self._reply(404, _error(404, 20404, "The requested resource was not found"))
        if not self._authorized():
            return self._reply(401, _error(401, 20003, "Authentication Error"))
        length = int(self.headers.get("Content-Length", "0"))
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        state = self.server.state
        with state.lock:
            state.requests.append(form)
            scripted = state.script.pop(0) if state.script else None
        if state.latency:
            time.sleep(state.latency)
        if scripted is not None:
            return self._reply(scripted.status, _error(scripted.status, scripted.code, "scripted"))
        to = form.get("To", "")
        if not E164.match(to):
            return self._reply(400, _error(400, 21211,
                                           f"The 'To' number {to} is not a valid phone number."))
        if to in state.unsubscribed:
            return self._reply(400, _error(400, 21610,
                                           "Attempt to send to unsubscribed recipient"))
        now = datetime.now(UTC)
        message = {
            "sid": "SM" + secrets.token_hex(16), "account_sid": ACCOUNT_SID, "to": to,
            "from": form.get("From"), "body": form.get("Body"), "status": "queued",
            "num_segments": "1", "direction": "outbound-api", "api_version": "2010-04-01",
            "date_created": format_datetime(now), "date_sent": None, "date_updated":
            format_datetime(now), "error_code": None, "error_message": None,
            "status_callback": form.get("StatusCallback"),
        }
        with state.lock:
            state.messages.append(message)
        if state.callback_first and message["status_callback"]:
            status_callback(message, state.callback_first)
        self._reply(201, message)

    def do_GET(self) -> None:
        if not self._path_ok() or not self._authorized():
            return self._reply(401, _error(401, 20003, "Authentication Error"))
        query = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
        with self.server.state.lock:
            found = [m for m in self.server.state.messages
                     if m["to"] == query.get("To", m["to"])
                     and m["from"] == query.get("From", m["from"])]
        self._reply(200, {"messages": found, "next_page_uri": None, "page": 0,
                          "page_size": len(found)})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many senders connect at once; the default backlog (5) resets some

    def __init__(self, state: TwilioState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


class TwilioServer:
    def __init__(self) -> None:
        self.state = TwilioState()
        self._server = _Server(self.state)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> TwilioServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def messages(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return list(self.state.messages)

    def fail_next(self, *responses: tuple[int, int]) -> None:
        """The next create calls answer these (HTTP status, Twilio error code) pairs."""
        with self.state.lock:
            self.state.script.extend(Scripted(s, c) for s, c in responses)

    def status_callback(self, message: dict[str, Any], status: str,
                        error_code: str | None = None) -> httpx.Response:
        """Post a delivery-status callback for `message` to its StatusCallback URL."""
        return status_callback(message, status, error_code)


def status_callback(message: dict[str, Any], status: str,
                    error_code: str | None = None) -> httpx.Response:
    params = {"MessageSid": message["sid"], "SmsSid": message["sid"],
              "MessageStatus": status, "SmsStatus": status, "To": message["to"],
              "From": message["from"], "AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01"}
    if error_code:
        params["ErrorCode"] = error_code
    return signed_post(message["status_callback"], params)


def signed_post(url: str, params: dict[str, str], token: str = AUTH_TOKEN,
                signature: str | None = None) -> httpx.Response:
    """POST a form to our webhook as Twilio does, with X-Twilio-Signature over the public URL."""
    sig = signature if signature is not None else twilio_signature(token, url, params)
    return httpx.post(url, data=params, headers={"X-Twilio-Signature": sig}, timeout=10)


def inbound_params(from_: str, to: str, body: str) -> dict[str, str]:
    """The form Twilio posts for an incoming SMS (the fields we use, plus the usual ones)."""
    sid = "SM" + secrets.token_hex(16)
    return {"MessageSid": sid, "SmsMessageSid": sid, "SmsSid": sid, "AccountSid": ACCOUNT_SID,
            "From": from_, "To": to, "Body": body, "NumMedia": "0", "NumSegments": "1",
            "ApiVersion": "2010-04-01"}


def twilio_server() -> Iterator[TwilioServer]:
    with TwilioServer() as server:
        yield server
