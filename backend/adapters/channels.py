"""The customer's channels: e-mail over SMTP, and a channel that only logs (push and
SMS in development, e-mail when no SMTP server is configured)."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import urlparse

from backend.logs import log


class Channel(Protocol):
    """One way to reach a customer. ``ref`` names the message (the notification row):
    an e-mail carries it as its Message-ID, so a mailbox can tell a resend."""

    name: str

    async def send(self, address: str, subject: str, body: str, ref: str) -> None: ...


class LogChannel:
    """Writes the message to the log (push and SMS in development, e-mail without SMTP)."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def send(self, address: str, subject: str, body: str, ref: str) -> None:
        log("notify.sent", channel=self.name, subject=subject, notification_id=ref)


class SmtpChannel:
    """E-mail through any SMTP server (``smtp://host:port``), stdlib smtplib in a thread."""

    name = "email"

    def __init__(self, url: str, sender: str, timeout_s: float = 10.0) -> None:
        parsed = urlparse(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 25
        self.user, self.password = parsed.username, parsed.password
        self.sender = sender
        self.timeout_s = timeout_s

    async def send(self, address: str, subject: str, body: str, ref: str) -> None:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = self.sender, address, subject
        msg["Message-ID"] = f"<{ref}@{self.sender.rpartition('@')[2] or 'caas.example'}>"
        msg.set_content(body)
        await asyncio.to_thread(self._send, msg)

    def _send(self, msg: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
            if self.user and self.password:
                smtp.login(self.user, self.password)
            smtp.send_message(msg)
