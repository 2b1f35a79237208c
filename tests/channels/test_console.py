"""The console channel: what `outreach demo` shows instead of sending."""

from __future__ import annotations

import io

from channels import ConsoleChannel, OutboundMessage


def test_console_writes_each_message_and_returns_distinct_ids() -> None:
    stream = io.StringIO()
    channel = ConsoleChannel(stream, name="sms")

    first = channel.send(OutboundMessage(key="k1", to="+15555550101", text="Hi Ana\nReply STOP"))
    second = channel.send(OutboundMessage(key="k2", to="ben@example.org", text="Hello Ben",
                                          subject="Your appointment"))

    out = stream.getvalue()
    assert "sms to +15555550101" in out
    assert "│ Hi Ana" in out and "│ Reply STOP" in out
    assert "ben@example.org — Your appointment" in out and "│ Hello Ben" in out
    assert out.index("Hi Ana") < out.index("Hello Ben")
    assert first.provider_message_id and second.provider_message_id
    assert first.provider_message_id != second.provider_message_id
    assert first.status == second.status == "sent"


def test_console_stands_in_under_the_name_and_medium_it_is_given() -> None:
    channel = ConsoleChannel(io.StringIO(), name="email", medium="EMAILWRIT")

    assert (channel.name, channel.medium) == ("email", "EMAILWRIT")
