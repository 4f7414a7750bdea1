"""A local SMTP server that keeps every message it is given, to count e-mails from
outside the backend: how many, and how many arrived twice (same ``Message-ID``).

Speaks just enough SMTP for ``smtplib`` (HELO/EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT):
it stands for the customer's mailbox in benchmarks and tests, never for a relay.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage

MAX_LINE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Received:
    to: str
    subject: str
    message_id: str
    body: str

    @property
    def identity(self) -> str:
        """What makes two deliveries the same e-mail: its Message-ID, else its content."""
        return self.message_id or f"{self.to}\n{self.subject}\n{self.body}"


@dataclass
class SmtpSink:
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port, known after start()
    messages: list[Received] = field(default_factory=list)
    _server: asyncio.Server | None = None

    async def start(self) -> SmtpSink:
        self._server = await asyncio.start_server(
            self._session, self.host, self.port, limit=MAX_LINE_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def duplicates(self) -> int:
        """E-mails delivered more than once: the extra copies."""
        counts = Counter(m.identity for m in self.messages)
        return sum(n - 1 for n in counts.values() if n > 1)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def reply(text: str) -> None:
            writer.write(f"{text}\r\n".encode())

        reply("220 caas-sink ESMTP")
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"DATA":
                    reply("354 end with <CRLF>.<CRLF>")
                    await writer.drain()
                    self._keep(await _data(reader))
                    reply("250 queued")
                elif verb == b"QUIT":
                    reply("221 bye")
                    break
                elif verb == b"EHLO":
                    reply("250 caas-sink")
                else:  # HELO, MAIL, RCPT, RSET, NOOP: accepted
                    reply("250 OK")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass  # a client that went away or sent nonsense: the session ends
        finally:
            writer.close()

    def _keep(self, raw: bytes) -> None:
        msg = message_from_bytes(raw, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        body = msg.get_body(("plain",))
        self.messages.append(
            Received(
                to=str(msg["To"] or ""),
                subject=str(msg["Subject"] or ""),
                message_id=str(msg["Message-ID"] or "").strip(),
                body=body.get_content().replace("\r\n", "\n").strip() if body is not None else "",
            )
        )


async def _data(reader: asyncio.StreamReader) -> bytes:
    """The message after DATA, up to the lone dot, with dot-stuffing undone."""
    lines = []
    while (line := await reader.readline()) not in (b".\r\n", b".\n", b""):
        lines.append(line[1:] if line.startswith(b"..") else line)
    return b"".join(lines)
