"""Request signatures: Twilio's X-Twilio-Signature, and our HMAC for the generic webhook."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence

from channels.phones import e164


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


# -- what a signed Twilio webhook may carry ---------------------------------------------------
# The signature covers names and values run together, so it does not fix where one field ends:
# a MessageSid that swallows the field after it ("SM…NumMedia0") is signed the same and would
# pass de-duplication as a new message. Each field's grammar fixes the boundaries again.

_MESSAGE_SID = re.compile(r"(SM|MM)[0-9a-f]{32}", re.ASCII)
_ACCOUNT_SID = re.compile(r"AC[0-9a-f]{32}", re.ASCII)
_SERVICE_SID = re.compile(r"MG[0-9a-f]{32}", re.ASCII)
_SHORT_CODE = re.compile(r"[0-9]{3,8}", re.ASCII)
_SENDER_ID = re.compile(r"(?=[0-9 ]*[A-Za-z])[A-Za-z0-9 ]{1,11}", re.ASCII)  # alphanumeric
_COUNT = re.compile(r"[0-9]{1,4}", re.ASCII)
_ERROR_CODE = re.compile(r"[0-9]{1,6}", re.ASCII)
_API_VERSION = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
# Twilio adds fields without notice: an unknown one is let through (and signed) if it is named
# the way Twilio names fields.
_FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}", re.ASCII)
MAX_BODY = 1600  # characters: Twilio's limit for one message
# Message statuses Twilio documents (MessageStatus, and SmsStatus, in callbacks and replies).
MESSAGE_STATUSES = frozenset({
    "accepted", "scheduled", "canceled", "queued", "sending", "sent", "failed", "delivered",
    "undelivered", "receiving", "received", "read", "partially_delivered",
})
INBOUND_FIELDS = ("MessageSid", "AccountSid", "From", "To", "Body")
STATUS_FIELDS = ("MessageSid", "AccountSid", "MessageStatus")


def _number(value: str) -> bool:
    return e164(value) == value or bool(_SHORT_CODE.fullmatch(value))


def _matches(pattern: re.Pattern[str]) -> Callable[[str], bool]:
    return lambda value: bool(pattern.fullmatch(value))


# Field name: (its check, what it must be). The ones we read or store, and those whose bounds
# an attacker would move.
_GRAMMAR: dict[str, tuple[Callable[[str], bool], str]] = {
    "MessageSid": (_matches(_MESSAGE_SID), "a message SID (SM or MM and 32 hex digits)"),
    "SmsSid": (_matches(_MESSAGE_SID), "a message SID (SM or MM and 32 hex digits)"),
    "SmsMessageSid": (_matches(_MESSAGE_SID), "a message SID (SM or MM and 32 hex digits)"),
    "AccountSid": (_matches(_ACCOUNT_SID), "an account SID (AC and 32 hex digits)"),
    "MessagingServiceSid": (_matches(_SERVICE_SID), "a messaging service SID"),
    "From": (_number, "an E.164 number or a short code"),
    "To": (_number, "an E.164 number or a short code"),
    "Body": (lambda value: len(value) <= MAX_BODY, f"at most {MAX_BODY} characters"),
    "NumMedia": (_matches(_COUNT), "a count"),
    "NumSegments": (_matches(_COUNT), "a count"),
    "ApiVersion": (_matches(_API_VERSION), "an API version date"),
    "MessageStatus": (MESSAGE_STATUSES.__contains__, "a Twilio message status"),
    "SmsStatus": (MESSAGE_STATUSES.__contains__, "a Twilio message status"),
    "ErrorCode": (_matches(_ERROR_CODE), "a Twilio error code"),
}


def twilio_webhook_problem(
    form: Mapping[str, str], required: Sequence[str], account_sid: str | None = None,
    *, sender_ids: bool = False,
) -> str | None:
    """Why a (signed) webhook form is not one Twilio sends, naming the field but never echoing
    its value; None when every field has its grammar. `required`: INBOUND_FIELDS or
    STATUS_FIELDS; `account_sid`: ours, when configured; `sender_ids`: a status callback's From
    may be an alphanumeric sender ID (what we sent from)."""
    missing = [name for name in required if name not in form]
    if missing:
        return f"the field {missing[0]} is missing"
    for name, value in form.items():
        if not _FIELD_NAME.fullmatch(name):
            return "a field name is not one Twilio uses"
        if "\x00" in value:
            return f"{name} holds a NUL character"
        check, meaning = _GRAMMAR.get(name, (None, ""))
        sender = sender_ids and name == "From" and bool(_SENDER_ID.fullmatch(value))
        if check is not None and not check(value) and not sender:
            return f"{name} must be {meaning}"
    if account_sid and form["AccountSid"] != account_sid:
        return "AccountSid is not this service's Twilio account"
    return None
