"""SMS through Twilio's Programmable Messaging REST API (httpx), failures classified for retry."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx

from channels.base import OutboundMessage, PermanentSendError, SendReceipt, TransientSendError

API_VERSION = "2010-04-01"
# Twilio error codes that mean the recipient cannot receive texts from us.
UNSUBSCRIBED = "21610"


class TwilioSmsChannel:
    name = "sms"
    medium = "WRITTEN"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        sender: str,
        *,
        base_url: str = "https://api.twilio.com",
        status_callback: str | None = None,
        throttle: Callable[[str], None] | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.sender = sender
        self._status_callback = status_callback
        self._throttle = throttle
        # Parsed once: httpx parses a string URL character by character on every request.
        self._messages = httpx.URL(
            f"{base_url.rstrip('/')}/{API_VERSION}/Accounts/{account_sid}/Messages.json")
        # Basic auth as a fixed header: httpx's auth flow would rebuild it for every message.
        token = base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), headers={"Authorization": f"Basic {token}"},
            timeout=timeout, transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def send(self, message: OutboundMessage) -> SendReceipt:
        form = {"To": message.to, "From": self.sender, "Body": message.text}
        if self._status_callback:
            form["StatusCallback"] = self._status_callback
        if self._throttle is not None:
            self._throttle(self.sender)  # a long code takes about one message per second
        try:
            response = self._http.post(self._messages, data=form)
        except httpx.TimeoutException as exc:
            # The message may have been created: the caller reconciles before any retry.
            raise TransientSendError("Twilio did not answer in time", code="timeout") from exc
        except httpx.TransportError as exc:
            raise TransientSendError(f"Twilio unreachable: {type(exc).__name__}") from exc
        body = _json(response)
        if response.status_code in (200, 201):
            return SendReceipt(provider_message_id=str(body.get("sid")),
                               status=str(body.get("status", "queued")))
        code = str(body.get("code") or response.status_code)
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientSendError(f"Twilio {response.status_code}", code=code)
        raise PermanentSendError(f"Twilio refused the message ({response.status_code})", code=code)

    def find_sent(self, to: str, text: str, since: datetime) -> str | None:
        """The sid of a message with this body already sent to `to` since `since`, if any: used
        after a worker died between calling Twilio and recording the result."""
        params = {"To": to, "From": self.sender, "DateSent>": since.date().isoformat(),
                  "PageSize": "100"}
        try:
            response = self._http.get(self._messages, params=params)
        except httpx.TransportError as exc:
            raise TransientSendError("Twilio unreachable while reconciling") from exc
        if response.status_code != 200:
            raise TransientSendError(f"Twilio {response.status_code} while reconciling")
        for item in _json(response).get("messages", []):
            if item.get("body") == text and item.get("status") not in ("failed", "canceled"):
                return str(item["sid"])
        return None


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
