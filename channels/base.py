"""The one Protocol every delivery channel implements, and how a send can fail."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """What to deliver; `key` is stable across retries so a provider can de-duplicate."""

    key: str
    to: str
    text: str
    subject: str | None = None
    html: str | None = None


@dataclass(frozen=True, slots=True)
class SendReceipt:
    provider_message_id: str | None
    status: str = "sent"


class SendError(Exception):
    """A send that did not happen; `code` is the provider's own error code when it gave one."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class TransientSendError(SendError):
    """Worth retrying later: the provider is down, slow, or asked us to back off."""


class PermanentSendError(SendError):
    """Retrying cannot help: a rejected address, a refused message."""


class Channel(Protocol):
    name: str
    # FHIR v3 ParticipationMode code for Communication.medium
    medium: str

    def send(self, message: OutboundMessage) -> SendReceipt: ...
