"""Request signatures: Twilio's X-Twilio-Signature, and our HMAC for the generic webhook."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """Base64 HMAC-SHA1 over the full URL followed by each POST parameter, sorted by name, as
    name+value with no separators (Twilio's documented scheme)."""
    payload = url + "".join(f"{key}{params[key]}" for key in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def valid_twilio_signature(
    auth_token: str, url: str, params: Mapping[str, str], signature: str | None
) -> bool:
    if not signature:
        return False
    expected = twilio_signature(auth_token, url, params)
    return hmac.compare_digest(expected.encode(), signature.encode())


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` over `{timestamp}.{body}`: the timestamp lets a gateway refuse replays."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()
