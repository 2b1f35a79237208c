"""A real SMTP server (aiosmtpd) on loopback that keeps what it receives, and can refuse."""

from __future__ import annotations

import email
import socket
import threading
import time
from email.message import EmailMessage
from email.policy import default
from typing import Any, NamedTuple

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Received(NamedTuple):
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


class _Mailbox:
    """Keeps what it accepts; `refuse_with` answers RCPT, `reject_with` answers DATA."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.refuse_with: str | None = None
        self.reject_with: str | None = None
        self.lock = threading.Lock()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: Any) -> str:
        if self.refuse_with:
            return self.refuse_with
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.reject_with:
            return self.reject_with
        parsed = email.message_from_bytes(envelope.original_content, policy=default)
        assert isinstance(parsed, EmailMessage)
        with self.lock:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"


class SmtpServer:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._mailbox = _Mailbox()
        self._controller: Controller | None = None

    def __enter__(self) -> SmtpServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._controller = Controller(self._mailbox, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def received(self) -> list[Received]:
        with self._mailbox.lock:
            return list(self._mailbox.received)

    @property
    def messages(self) -> list[EmailMessage]:
        return [r.message for r in self.received]

    def reset(self) -> None:
        with self._mailbox.lock:
            self._mailbox.received.clear()
        self._mailbox.refuse_with = self._mailbox.reject_with = None

    def refuse(self, reply: str | None) -> None:
        """Answer RCPT with this reply (e.g. "550 5.1.1 No such user")."""
        self._mailbox.refuse_with = reply

    def reject(self, reply: str | None) -> None:
        """Answer DATA with this reply (e.g. "554 5.7.1 rejected")."""
        self._mailbox.reject_with = reply

    def wait_for(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.messages
