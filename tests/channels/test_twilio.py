"""The Twilio SMS channel against a local server shaped like Twilio's Messages API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from channels import OutboundMessage, PermanentSendError, TransientSendError
from channels.twilio import TwilioSmsChannel
from tests.support.twilio_server import ACCOUNT_SID, AUTH_TOKEN, TwilioServer

MESSAGE = OutboundMessage(key="step-1", to="+15555550123", text="Reminder. Reply STOP to opt out.")


def _channel(twilio: TwilioServer, **kwargs: object) -> TwilioSmsChannel:
    return TwilioSmsChannel(ACCOUNT_SID, AUTH_TOKEN, "+15555550100", base_url=twilio.base_url,
                            **kwargs)  # type: ignore[arg-type]


def test_send_posts_the_documented_form_and_returns_the_sid(twilio: TwilioServer) -> None:
    receipt = _channel(twilio, status_callback="https://outreach.example/cb").send(MESSAGE)
    (request,) = twilio.state.requests
    assert request == {"To": "+15555550123", "From": "+15555550100", "Body": MESSAGE.text,
                       "StatusCallback": "https://outreach.example/cb"}
    assert receipt.provider_message_id == twilio.messages[0]["sid"]
    assert receipt.provider_message_id.startswith("SM") and receipt.status == "queued"


@pytest.mark.parametrize(("status", "code", "error"), [
    (400, 21211, PermanentSendError), (400, 21610, PermanentSendError),
    (401, 20003, PermanentSendError), (429, 20429, TransientSendError),
    (500, 20500, TransientSendError), (503, 20503, TransientSendError),
])
def test_failures_are_classified_with_twilios_code(
    twilio: TwilioServer, status: int, code: int, error: type[Exception]
) -> None:
    twilio.fail_next((status, code))
    with pytest.raises(error) as info:
        _channel(twilio).send(MESSAGE)
    assert info.value.code == str(code)  # type: ignore[attr-defined]
    assert isinstance(info.value, PermanentSendError) == (error is PermanentSendError)


def test_a_timeout_is_transient_and_marked_ambiguous(twilio: TwilioServer) -> None:
    twilio.state.latency = 0.5
    with pytest.raises(TransientSendError) as info:
        _channel(twilio, timeout=0.1).send(MESSAGE)
    assert info.value.code == "timeout"


def test_find_sent_sees_a_message_whose_result_was_lost(twilio: TwilioServer) -> None:
    channel = _channel(twilio)
    since = datetime.now(UTC) - timedelta(minutes=1)
    assert channel.find_sent(MESSAGE.to, MESSAGE.text, since) is None
    sid = channel.send(MESSAGE).provider_message_id
    assert channel.find_sent(MESSAGE.to, MESSAGE.text, since) == sid
    assert channel.find_sent(MESSAGE.to, "another text", since) is None


def test_the_throttle_is_asked_before_every_send(twilio: TwilioServer) -> None:
    senders: list[str] = []
    channel = _channel(twilio, throttle=senders.append)
    channel.send(MESSAGE)
    channel.send(MESSAGE)
    assert senders == ["+15555550100", "+15555550100"]
