"""The demo's channels: console channels that keep what each message printed, by the message's
key (a step's uid, an offer's), so the timeline shows it under the line that explains it."""

from __future__ import annotations

import io

from channels import ConsoleChannel, OutboundMessage, SendReceipt


class KeyedConsole:
    def __init__(self, name: str, medium: str, printed: dict[str, str]) -> None:
        self.name, self.medium = name, medium
        self._buffer = io.StringIO()
        self._console = ConsoleChannel(self._buffer, name=name, medium=medium)
        self._printed = printed

    def send(self, message: OutboundMessage) -> SendReceipt:
        receipt = self._console.send(message)
        self._printed[message.key] = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return receipt
