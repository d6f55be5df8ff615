"""The bounce and feedback listener (port 25 in production).

APPSEC: accepts mail only for genuine VERP addresses (the HMAC in the token
must check out) and for the feedback-loop address; every other recipient gets
550, except ``unsubscribe@`` (any domain we serve), the ``mailto:`` of every
campaign's List-Unsubscribe header, whose Subject carries a signed
unsubscribe token. The token, not the domain, is the proof: campaign mail carries its VERP
address on the sending domain's own return-path domain (``bounces.<domain>``,
which tenants point at this listener), while relay-generated mail uses
``bounce_domain``, so a genuine token is accepted at either. Nothing received
here is ever relayed onwards. Reports (RFC 3464 DSNs, RFC 5965 ARF) become
the same outcomes as synchronous replies: events, ledger status,
suppressions for hard bounces and complaints.
"""

from __future__ import annotations

import asyncio
import email.policy
import functools
import hashlib
import re
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from email.parser import BytesHeaderParser
from typing import Any

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session
from swiftmail_relay import verp
from swiftmail_relay.classify import Reply, classify
from swiftmail_relay.config import RelayConfig
from swiftmail_relay.dsn import Finding, parse_report
from swiftmail_relay.listener_errors import TransientOnError
from swiftmail_relay.message_checks import canonical_line_endings, split_header_block
from swiftmail_relay.outcomes import Outcome

from swiftmail_core.settings import Settings

log = structlog.get_logger("swiftmail.relay.bounces")
UNSUBSCRIBE_LOCAL_PART = "unsubscribe"
WORKER_THREADS = 4
UNSUBSCRIBE_SUBJECT = re.compile(r"unsubscribe-([A-Za-z0-9_-]+)")


def report_digest(raw: bytes) -> str:
    """Return a key of a report that survives re-delivery (trace fields differ, content not).

    The report's Message-ID and its body, line endings made CRLF: a copy that
    took another route, or was sent again after a lost reply, gets the same key.
    """
    lines, body_at = split_header_block(raw)
    message_id = b""
    for line in lines:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"message-id":
            message_id = value.strip()
    body = canonical_line_endings(raw[body_at:])
    return hashlib.sha256(message_id + b"\0" + body).hexdigest()[:20]


def _subject(raw: bytes) -> str:
    """Return the Subject of a message (headers only are parsed)."""
    _, body_at = split_header_block(raw)
    return str(BytesHeaderParser(policy=email.policy.default).parsebytes(
        raw[:body_at])["Subject"] or "")


class BounceHandler(TransientOnError):
    """aiosmtpd handler for VERP bounces and feedback-loop reports."""

    def __init__(self, settings: Settings, config: RelayConfig,
                 record: Callable[[Sequence[Outcome]], None]) -> None:
        self.settings = settings
        self.config = config
        self.record = record
        # Parsing (CPU, up to 25 MiB) and database writes get their own threads:
        # a flood of reports or a stalled database holds these, never the
        # threads the relay's spool writes and deliveries use.
        self.workers = ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="relay-bounces")

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        """Answer EHLO without AUTH: this listener (the MX on 25) authenticates nobody."""
        session.host_name = hostname
        return [line for line in responses if not line[4:].upper().startswith("AUTH")]

    async def _off_loop(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(
            self.workers, functools.partial(function, *args))

    def _verp(self, address: str) -> tuple[uuid.UUID, int | None] | None:
        # APPSEC: the token's HMAC is the proof, whatever the domain: every
        # tenant's return-path domain (``bounces.<domain>``) and ``bounce_domain``.
        if not self.settings.secret_key:
            return None
        return verp.decode(self.settings.secret_key, address)

    @staticmethod
    def _is_unsubscribe(address: str) -> bool:
        return address.rpartition("@")[0].lower() == UNSUBSCRIBE_LOCAL_PART

    def _is_fbl(self, address: str) -> bool:
        return bool(self.config.fbl_address) and address.lower() == self.config.fbl_address.lower()

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        """Accept only VERP addresses and the feedback-loop address."""
        if (self._verp(address) is None and not self._is_fbl(address)
                and not self._is_unsubscribe(address)):
            return "550 5.1.1 No such recipient here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Parse the report and record what it says."""
        raw = envelope.original_content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        if any(self._is_unsubscribe(rcpt) for rcpt in envelope.rcpt_tos):
            return await self._unsubscribe(raw)
        # A report may be 25 MiB: parse it in a worker thread, never on the loop.
        outcomes = await self._off_loop(self.outcomes, list(envelope.rcpt_tos), raw)
        if outcomes:
            try:
                await self._off_loop(self.record, outcomes)
            except Exception as ex:
                log.error("bounce_record_failed", error=str(ex))
                return "451 4.3.0 Cannot record the report now, try again later"
        return "250 2.0.0 OK"

    async def _unsubscribe(self, raw: bytes) -> str:
        """Apply a List-Unsubscribe ``mailto:``: the Subject holds the signed token."""
        from swiftmail_core import self_service
        from swiftmail_core.errors import SwiftMailError
        from swiftmail_core.tokens import read_unsubscribe_token

        subject = await self._off_loop(_subject, raw)
        match = UNSUBSCRIBE_SUBJECT.search(str(subject))
        try:
            if match is None or not self.settings.secret_key:
                raise ValueError("no token")
            # APPSEC: tenant, contact and list come only from the verified token.
            token = read_unsubscribe_token(self.settings.secret_key, match[1])
        except (ValueError, SwiftMailError):
            return "550 5.7.1 No valid unsubscribe token in the Subject"
        try:
            await self._off_loop(functools.partial(
                self_service.unsubscribe, token.tenant_id, token.contact_id, token.list_id,
                source="mailto"))
        except Exception as ex:
            log.error("mailto_unsubscribe_failed", error=str(ex))
            return "451 4.3.0 Cannot record the unsubscribe now, try again later"
        return "250 2.0.0 Unsubscribed"

    def outcomes(self, recipients: Sequence[str], raw: bytes) -> list[Outcome]:
        """Turn a report sent to ``recipients`` into outcomes."""
        digest = report_digest(raw)
        findings = parse_report(raw)
        result = []
        for rcpt in recipients:
            owner = self._verp(rcpt)
            for finding in findings:
                target = owner or (self._verp(finding.original_return_path)
                                   if finding.original_return_path else None)
                if target is None:
                    continue
                outcome = self._outcome(target, finding, digest)
                if outcome is not None:
                    result.append(outcome)
        return result

    @staticmethod
    def _outcome(target: tuple[uuid.UUID, int | None], finding: Finding, digest: str) -> Outcome | None:
        tenant_id, ledger_id = target
        source_key = f"report:{digest}:{finding.recipient.lower()}:{finding.kind}"
        if ledger_id is not None and finding.kind in ("bounced", "complained"):
            # One message bounces or draws a complaint once, however many
            # copies of the report arrive (the reputation rates count these).
            source_key = f"report:ledger:{ledger_id}:{finding.recipient.lower()}:{finding.kind}"
        if finding.kind == "complained":
            return Outcome(tenant_id=tenant_id, type="complained", email=finding.recipient,
                           ledger_id=ledger_id, source_key=source_key,
                           detail={"feedback_type": finding.feedback_type})
        if finding.kind not in ("bounced", "deferred"):
            return None
        status = finding.status or ("5.0.0" if finding.kind == "bounced" else "4.0.0")
        code = 550 if status.startswith("5") else 450
        text = finding.diagnostic.removeprefix("smtp;").strip()
        if text[:3].isdigit():
            text = text[4:]
        if not text.startswith(status):
            text = f"{status} {text}".strip()
        reply = Reply(code, text)
        _permanent, bounce_class = classify(reply)
        return Outcome(
            tenant_id=tenant_id, type="bounced" if finding.kind == "bounced" else "deferred",
            email=finding.recipient, ledger_id=ledger_id, bounce_class=bounce_class,
            reply=str(reply), source_key=source_key, detail={"via": "dsn"},
        )
