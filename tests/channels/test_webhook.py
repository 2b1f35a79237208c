"""The signed gateway channel against a real local HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from channels import OutboundMessage, PermanentSendError, TransientSendError
from channels.signatures import webhook_signature
from channels.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookChannel

SECRET = "gateway-secret"


class _Gateway(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.answer = 202


class _Handler(BaseHTTPRequestHandler):
    server: _Gateway

    def log_message(self, *_args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((dict(self.headers), body))
        payload = json.dumps({"id": "gw-1"}).encode()
        self.send_response(self.server.answer)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def gateway() -> Iterator[_Gateway]:
    server = _Gateway()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def _channel(gateway: _Gateway) -> WebhookChannel:
    return WebhookChannel(f"http://127.0.0.1:{gateway.server_address[1]}/send", SECRET)


MESSAGE = OutboundMessage(key="step-9", to="+15555550123", text="Hi. Reply STOP to opt out.")


def test_the_gateway_can_verify_what_it_receives(gateway: _Gateway) -> None:
    receipt = _channel(gateway).send(MESSAGE)
    ((headers, body),) = gateway.received
    assert headers[SIGNATURE_HEADER] == webhook_signature(SECRET, headers[TIMESTAMP_HEADER], body)
    assert headers["Idempotency-Key"] == "step-9"
    assert json.loads(body) == {"key": "step-9", "channel": "sms", "to": "+15555550123",
                                "subject": None, "text": MESSAGE.text, "html": None}
    assert receipt.provider_message_id == "gw-1"


@pytest.mark.parametrize(("status", "error"), [(500, TransientSendError),
                                               (429, TransientSendError),
                                               (422, PermanentSendError)])
def test_failures_are_classified(gateway: _Gateway, status: int, error: type[Exception]) -> None:
    gateway.answer = status
    with pytest.raises(error):
        _channel(gateway).send(MESSAGE)
