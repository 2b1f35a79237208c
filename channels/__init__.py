"""Delivery adapters behind one Protocol, message templates and (later) inbound reply parsing."""

from channels.base import (
    Channel,
    OutboundMessage,
    PermanentSendError,
    SendError,
    SendReceipt,
    TransientSendError,
)
from channels.console import ConsoleChannel
from channels.email import SmtpEmailChannel
from channels.templates import RenderedMessage, TemplateCatalog, TemplateError

__all__ = [
    "Channel",
    "ConsoleChannel",
    "OutboundMessage",
    "PermanentSendError",
    "RenderedMessage",
    "SendError",
    "SendReceipt",
    "SmtpEmailChannel",
    "TemplateCatalog",
    "TemplateError",
    "TransientSendError",
]
