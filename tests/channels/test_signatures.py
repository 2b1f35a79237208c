"""Webhook signatures: Twilio's scheme (its documented example) and our gateway HMAC."""

from __future__ import annotations

import hashlib
import hmac

from channels.signatures import twilio_signature, valid_twilio_signature, webhook_signature

# The example in Twilio's "Validating requests" documentation.
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234",
          "From": "+12349013030", "To": "+18005551212"}


def test_twilio_documented_example() -> None:
    assert twilio_signature("12345", URL, PARAMS) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_any_change_invalidates_the_signature() -> None:
    good = twilio_signature("12345", URL, PARAMS)
    assert valid_twilio_signature("12345", URL, PARAMS, good)
    assert not valid_twilio_signature("12345", URL, {**PARAMS, "Digits": "1235"}, good)
    assert not valid_twilio_signature("12345", URL.replace("foo=1", "foo=2"), PARAMS, good)
    assert not valid_twilio_signature("54321", URL, PARAMS, good)
    assert not valid_twilio_signature("12345", URL, PARAMS, None)


def test_gateway_signature_covers_timestamp_and_body() -> None:
    expected = hmac.new(b"s3cret", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert webhook_signature("s3cret", "1700000000", b"{}") == f"sha256={expected}"
    assert webhook_signature("s3cret", "1700000001", b"{}") != f"sha256={expected}"
