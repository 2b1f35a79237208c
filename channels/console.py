"""A channel that writes messages to a text stream: development and `outreach demo`."""

from __future__ import annotations

import itertools
from typing import TextIO

from channels.base import OutboundMessage, SendReceipt


class ConsoleChannel:
    """Stands in for a real channel (named after it) and shows what would have been sent."""

    def __init__(self, stream: TextIO, name: str = "console", medium: str = "WRITTEN") -> None:
        self.name = name
        self.medium = medium
        self._stream = stream
        self._ids = itertools.count(1)

    def send(self, message: OutboundMessage) -> SendReceipt:
        header = f"    ┌ {self.name} to {message.to}"
        if message.subject:
            header += f" — {message.subject}"
        lines = [header, *(f"    │ {line}" for line in message.text.splitlines())]
        self._stream.write("\n".join([*lines, "    └"]) + "\n")
        return SendReceipt(provider_message_id=f"{self.name}-{next(self._ids)}")
