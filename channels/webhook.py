"""A signed generic webhook channel, for hospitals with their own messaging gateway."""

from __future__ import annotations

import json
import time

import httpx

from channels.base import OutboundMessage, PermanentSendError, SendReceipt, TransientSendError
from channels.signatures import webhook_signature

SIGNATURE_HEADER = "X-Outreach-Signature"
TIMESTAMP_HEADER = "X-Outreach-Timestamp"


class WebhookChannel:
    """POSTs `{key, channel, to, subject, text, html}` as JSON, signed with HMAC-SHA256 over
    `{timestamp}.{body}`; the gateway answers 2xx (optionally `{"id": ...}`)."""

    def __init__(self, url: str, secret: str, *, name: str = "sms", medium: str = "WRITTEN",
                 timeout: float = 10.0, transport: httpx.BaseTransport | None = None) -> None:
        self.name, self.medium = name, medium
        self._url, self._secret = url, secret
        self._http = httpx.Client(timeout=timeout, transport=transport)

    def send(self, message: OutboundMessage) -> SendReceipt:
        body = json.dumps({"key": message.key, "channel": self.name, "to": message.to,
                           "subject": message.subject, "text": message.text,
                           "html": message.html}).encode()
        stamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: stamp,
                   SIGNATURE_HEADER: webhook_signature(self._secret, stamp, body),
                   "Idempotency-Key": message.key}
        try:
            response = self._http.post(self._url, content=body, headers=headers)
        except httpx.TransportError as exc:
            raise TransientSendError(f"gateway unreachable: {type(exc).__name__}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientSendError(f"gateway {response.status_code}",
                                     code=str(response.status_code))
        if not response.is_success:
            raise PermanentSendError(f"gateway refused ({response.status_code})",
                                     code=str(response.status_code))
        try:
            provider_id = response.json().get("id")
        except (ValueError, AttributeError):
            provider_id = None
        return SendReceipt(provider_message_id=str(provider_id) if provider_id else message.key)
