"""Email over SMTP (stdlib smtplib): multipart text + HTML, failures classified for retry."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import make_msgid

from channels.base import OutboundMessage, PermanentSendError, SendReceipt, TransientSendError


class SmtpEmailChannel:
    name = "email"
    medium = "EMAILWRIT"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        starttls: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.starttls, self.username, self.password = starttls, username, password
        self.timeout = timeout

    def _build(self, message: OutboundMessage) -> EmailMessage:
        email = EmailMessage()
        email["From"] = self.sender
        email["To"] = message.to
        email["Subject"] = message.subject or ""
        domain = self.sender.rpartition("@")[2] or None
        email["Message-ID"] = make_msgid(idstring=message.key, domain=domain)
        email.set_content(message.text)
        if message.html:
            email.add_alternative(message.html, subtype="html")
        return email

    def send(self, message: OutboundMessage) -> SendReceipt:
        email = self._build(message)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(email)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = {code for code, _ in exc.recipients.values()}
            error = PermanentSendError if all(c >= 500 for c in codes) else TransientSendError
            raise error("recipient refused", code=",".join(map(str, sorted(codes)))) from exc
        except smtplib.SMTPResponseException as exc:
            error = PermanentSendError if exc.smtp_code >= 500 else TransientSendError
            raise error(f"SMTP {exc.smtp_code}", code=str(exc.smtp_code)) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise TransientSendError(f"SMTP server unreachable: {type(exc).__name__}") from exc
        return SendReceipt(provider_message_id=str(email["Message-ID"]))
