"""The SMTP email channel against a real SMTP server (aiosmtpd on loopback)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from channels import OutboundMessage, PermanentSendError, SmtpEmailChannel, TransientSendError
from tests.support.smtp import SmtpServer, free_port

SENDER = "reminders@clinic.example.org"
MESSAGE = OutboundMessage(
    key="enr-42.reminder-24h",
    to="ana.garcia@example.org",
    subject="Reminder: your appointment",
    text="Hello Ana,\nSee you tomorrow at 10:30.",
    html="<p>Hello Ana,</p><p>See you <strong>tomorrow at 10:30</strong>.</p>",
)


@pytest.fixture(scope="module")
def server() -> Iterator[SmtpServer]:
    with SmtpServer() as smtp:
        yield smtp


@pytest.fixture
def mailbox(server: SmtpServer) -> SmtpServer:
    server.reset()
    return server


@pytest.fixture
def channel(server: SmtpServer) -> SmtpEmailChannel:
    return SmtpEmailChannel("127.0.0.1", server.port, SENDER, timeout=5)


def test_message_arrives_as_multipart_text_and_html(
    mailbox: SmtpServer, channel: SmtpEmailChannel
) -> None:
    receipt = channel.send(MESSAGE)

    ((mail_from, rcpt_tos, message),) = mailbox.received
    assert (mail_from, rcpt_tos) == (SENDER, ["ana.garcia@example.org"])
    assert message["From"] == SENDER
    assert message["To"] == "ana.garcia@example.org"
    assert message["Subject"] == "Reminder: your appointment"
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    assert "See you tomorrow at 10:30." in text.get_content()
    assert "<strong>tomorrow at 10:30</strong>" in html.get_content()
    # A long Message-ID is folded in transit; unfolded, it is the id we recorded.
    assert str(message["Message-ID"]).strip() == receipt.provider_message_id
    assert str(receipt.provider_message_id).endswith("@clinic.example.org>")


def test_message_ids_differ_between_sends(mailbox: SmtpServer, channel: SmtpEmailChannel) -> None:
    first, second = channel.send(MESSAGE), channel.send(MESSAGE)

    assert first.provider_message_id != second.provider_message_id
    assert len(mailbox.received) == 2


def test_text_only_message_is_not_multipart(mailbox: SmtpServer, channel: SmtpEmailChannel) -> None:
    channel.send(OutboundMessage(key="k", to="ben@example.org", text="Hi Ben", subject="Hi"))

    ((_, _, message),) = mailbox.received
    assert message.get_content_type() == "text/plain"
    assert message.get_content().strip() == "Hi Ben"


def test_server_not_listening_is_transient() -> None:
    channel = SmtpEmailChannel("127.0.0.1", free_port(), SENDER, timeout=2)

    with pytest.raises(TransientSendError):
        channel.send(MESSAGE)


def test_recipient_refused_with_550_is_permanent(
    mailbox: SmtpServer, channel: SmtpEmailChannel
) -> None:
    mailbox.refuse("550 5.1.1 No such user")

    with pytest.raises(PermanentSendError) as info:
        channel.send(MESSAGE)

    assert info.value.code == "550"
    assert mailbox.received == []


def test_recipient_deferred_with_451_is_transient(
    mailbox: SmtpServer, channel: SmtpEmailChannel
) -> None:
    mailbox.refuse("451 4.3.0 Try again later")

    with pytest.raises(TransientSendError) as info:
        channel.send(MESSAGE)

    assert info.value.code == "451"
    assert not isinstance(info.value, PermanentSendError)


@pytest.mark.parametrize(
    ("reply", "error", "code"),
    [
        ("554 5.7.1 Message rejected as spam", PermanentSendError, "554"),
        ("452 4.3.1 Insufficient system storage", TransientSendError, "452"),
    ],
)
def test_message_refused_after_data_is_classified_by_code(
    mailbox: SmtpServer, channel: SmtpEmailChannel, reply: str, error: type[Exception], code: str
) -> None:
    mailbox.reject(reply)

    with pytest.raises(error) as info:
        channel.send(MESSAGE)

    assert getattr(info.value, "code", None) == code
    assert isinstance(info.value, PermanentSendError) == (error is PermanentSendError)
