"""The ``smtp`` transport: any smarthost, with connections reused.

Settings (``[plugins.smtp]`` or ``SWIFTMAIL_PLUGIN_SMTP_*``): ``host``
(default 127.0.0.1), ``port`` (25; 465 implies implicit TLS), ``security``
(``none``, ``starttls`` or ``tls``), ``username``, ``password``,
``timeout`` (seconds), ``verify`` (verify TLS certificates, default true).

Each worker thread keeps its own connection open across batches and
reconnects once when the server dropped it before DATA; ``close`` (which
the plugin host calls when a worker shuts down) closes every thread's; a connection lost
once DATA began is never retried (the message may have been taken): its
outcome is ``unknown``. Replies map to outcomes:
2xx accepted, 4xx deferred, 5xx rejected (a 5.1.x or 550/551/553 recipient
refusal is a hard bounce, an address problem; other 5xx are policy).
"""

from __future__ import annotations

import re
import smtplib
import ssl
import threading
from collections.abc import Sequence
from typing import Any

from swiftmail_core.hookspecs import hookimpl
from swiftmail_core.settings import Settings
from swiftmail_core.transports import OutboundMessage, Outcome, SendResult

ADDRESS_CODES = frozenset({550, 551, 553})
_ENHANCED = re.compile(rb"^\s*([245])\.(\d{1,3})\.(\d{1,3})")


def classify_reply(code: int, text: bytes | str) -> tuple[Outcome, str | None]:
    """Map an SMTP reply to an outcome and, for rejections, a bounce class."""
    if 200 <= code < 300:
        return Outcome.ACCEPTED, None
    if 400 <= code < 500 or code < 200:
        return Outcome.DEFERRED, None
    raw = text.encode() if isinstance(text, str) else text
    match = _ENHANCED.match(raw or b"")
    if match:
        subject = int(match.group(2))
        if subject == 1:
            return Outcome.REJECTED, "hard"
        if subject == 2 and int(match.group(3)) == 2:
            return Outcome.REJECTED, "mailbox_full"
        return Outcome.REJECTED, "policy"
    return Outcome.REJECTED, "hard" if code in ADDRESS_CODES else "policy"


def _reason(code: int, text: Any) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {text}".strip()


class SmtpTransport:
    """Send through an SMTP server, one connection per worker thread."""

    name = "smtp"

    def __init__(self, options: dict[str, Any], name: str = "smtp") -> None:
        self.name = name
        self.host = str(options.get("host", "127.0.0.1"))
        self.port = int(options.get("port", 25))
        self.security = str(options.get("security", "tls" if self.port == 465 else "none")).lower()
        if self.security not in ("none", "starttls", "tls"):
            from swiftmail_core.errors import ConfigurationError

            raise ConfigurationError(
                f"plugins.{name}.security is {self.security!r}: use none, starttls or tls")
        self.username = options.get("username") or None
        self.password = options.get("password") or None
        self.timeout = float(options.get("timeout", 30))
        self.verify = str(options.get("verify", "true")).lower() not in ("0", "false", "no")
        self._connections: dict[int, smtplib.SMTP] = {}  # thread id: its connection
        self._lock = threading.Lock()

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _connect(self) -> smtplib.SMTP:
        connection: smtplib.SMTP
        if self.security == "tls":
            connection = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=self._tls_context())
        else:
            connection = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        connection.ehlo_or_helo_if_needed()
        if self.security == "starttls":
            connection.starttls(context=self._tls_context())
            connection.ehlo()
        if self.username:
            connection.login(self.username, self.password or "")
        return connection

    def _connection(self) -> smtplib.SMTP:
        connection = self._connections.get(threading.get_ident())
        if connection is None:
            connection = self._connect()
            with self._lock:
                self._connections[threading.get_ident()] = connection
        return connection

    def _drop(self) -> None:
        with self._lock:
            connection = self._connections.pop(threading.get_ident(), None)
        if connection is not None:
            try:
                connection.close()
            except OSError:
                pass

    def _transaction(self, connection: smtplib.SMTP, message: OutboundMessage,
                     data_started: list[bool]) -> None:
        """Run MAIL, RCPT and DATA (what ``sendmail`` does), noting when DATA begins."""
        connection.ehlo_or_helo_if_needed()
        code, reply = connection.mail(message.envelope_from)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, reply, message.envelope_from)
        code, reply = connection.rcpt(message.recipient)
        if code not in (250, 251):
            raise smtplib.SMTPRecipientsRefused({message.recipient: (code, reply)})
        data_started.append(True)
        code, reply = connection.data(message.raw)
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)

    def _send_one(self, message: OutboundMessage) -> SendResult:
        for attempt in (1, 2):
            data_started: list[bool] = []
            try:
                self._transaction(self._connection(), message, data_started)
            except smtplib.SMTPRecipientsRefused as ex:
                code, text = ex.recipients.get(message.recipient, (550, b"refused"))
                outcome, bounce = classify_reply(code, text)
                self._reset()
                return SendResult(message.ledger_id, outcome, reason=_reason(code, text),
                                  bounce_class=bounce)
            except smtplib.SMTPResponseException as ex:
                outcome, bounce = classify_reply(ex.smtp_code, ex.smtp_error)
                if ex.smtp_code == 421:
                    self._drop()
                else:
                    self._reset()
                if outcome is Outcome.REJECTED and bounce == "hard" and isinstance(
                        ex, smtplib.SMTPSenderRefused):
                    bounce = "policy"  # the sender was refused, not the recipient
                return SendResult(message.ledger_id, outcome,
                                  reason=_reason(ex.smtp_code, ex.smtp_error), bounce_class=bounce)
            except (smtplib.SMTPServerDisconnected, OSError) as ex:
                self._drop()
                if data_started:
                    # The message may have been taken: never send it again on our own.
                    return SendResult(message.ledger_id, Outcome.UNKNOWN,
                                      reason=f"connection lost during DATA: {ex}")
                if attempt == 2:
                    return SendResult(message.ledger_id, Outcome.DEFERRED,
                                      reason=f"connection to {self.host}:{self.port} failed: {ex}")
                continue
            except smtplib.SMTPException as ex:
                self._drop()
                return SendResult(message.ledger_id, Outcome.DEFERRED, reason=str(ex))
            return SendResult(message.ledger_id, Outcome.ACCEPTED)
        raise AssertionError("unreachable")

    def _reset(self) -> None:
        connection = self._connections.get(threading.get_ident())
        if connection is not None:
            try:
                connection.rset()
            except (smtplib.SMTPException, OSError):
                self._drop()

    def send(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """Send each message on this thread's connection; answer per message."""
        return [self._send_one(message) for message in messages]

    def close(self) -> None:
        """Close every thread's connection (QUIT, then the socket).

        Call it once the threads are done sending (the host does, at worker
        shutdown); a thread that sends afterwards opens a new connection.
        """
        with self._lock:
            connections = list(self._connections.values())
            self._connections.clear()
        for connection in connections:
            try:
                connection.quit()
            except (smtplib.SMTPException, OSError):
                pass
            finally:
                connection.close()


@hookimpl
def swiftmail_register_transports(settings: Settings) -> list[SmtpTransport]:
    """Register the ``smtp`` transport."""
    return [SmtpTransport(settings.plugin_settings("smtp"))]


@hookimpl
def swiftmail_secret_settings() -> dict[str, list[str]]:
    """Declare the SMTP AUTH password secret."""
    return {"smtp": ["password"]}
