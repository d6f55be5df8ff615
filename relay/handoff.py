"""Hand mail to the relay in-process, as durably as an SMTP 250.

Stable API for the platform's own campaign mail on the same host (the
sending pipeline's ``relay`` transport calls it)::

    spool_message(settings, *, raw: bytes, envelope_from: str,
                  recipients: Sequence[str], tenant_id: UUID | str | None = None,
                  ledger_ids: Sequence[int | None] | None = None,
                  campaign_id: UUID | str | None = None, sign: bool = True) -> str

    spool_messages(settings, messages: Sequence[OutboundMessage],
                   *, sign: bool = True) -> list[str]

Both return only after every message and its envelope are on disk (write,
fsync, rename, fsync of the spool directory; ``spool_messages`` shares one
directory fsync across the batch) and return the queue ids. They raise
``SpoolError`` (a ``ServiceUnavailableError``) when the spool cannot write:
nothing was accepted, defer and retry. DKIM signing (the tenant's key for
the From domain) happens here, in the caller's process, so signing scales
with the number of sending workers; the relay process only delivers. A
running ``swiftmail relay`` picks new files up within ``scan_interval``.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from swiftmail_relay import dkim, metrics
from swiftmail_relay.config import RelayConfig
from swiftmail_relay.keys import KeyStore
from swiftmail_relay.message_checks import (
    canonical_line_endings,
    from_domain,
    local_received_header,
)
from swiftmail_relay.spool import Envelope, Recipient, Spool, new_id

from swiftmail_core.settings import Settings
from swiftmail_core.transports import OutboundMessage

log = structlog.get_logger("swiftmail.relay.handoff")


@functools.lru_cache(maxsize=8)
def _spool(path: Path) -> Spool:
    return Spool(path)


@functools.lru_cache(maxsize=4)
def _keys(secret_key: str, ed25519: bool) -> KeyStore:
    return KeyStore(secret_key, ed25519=ed25519)


def sign_for_tenant(settings: Settings, config: RelayConfig, raw: bytes,
                    tenant_id: uuid.UUID | str | None) -> bytes:
    """DKIM-sign ``raw`` with the tenant's key for its From domain (if it has one).

    Line endings are made CRLF first: the signed bytes are the bytes sent.
    """
    raw = canonical_line_endings(raw)
    return sign_canonical(settings, config, raw, tenant_id, from_domain(raw))


def sign_canonical(settings: Settings, config: RelayConfig, raw: bytes,
                   tenant_id: uuid.UUID | str | None, domain: str | None) -> bytes:
    """Sign as ``sign_for_tenant`` a message already in CRLF form, its From domain read.

    ``raw`` is what ``canonical_line_endings`` returned and ``domain`` what
    ``from_domain`` read from it: neither pass over the message runs again.
    """
    if tenant_id is None or domain is None or not settings.secret_key:
        return raw
    keys = _keys(settings.secret_key, config.dkim_ed25519).signing_keys(tenant_id, domain)
    if not keys:
        log.warning("dkim_no_key", tenant_id=str(tenant_id), domain=domain)
        return raw
    started = time.perf_counter()
    signed = dkim.sign(raw, keys, crlf=True)
    metrics.SIGNING_SECONDS.observe(time.perf_counter() - started)
    return signed


def warmup_plan(settings: Settings, config: RelayConfig, tenant_id: uuid.UUID | str | None,
                domain: str | None) -> dict[str, Any] | None:
    """Return the tenant's warm-up plan for a sending domain (``sending_domains.warmup_plan``).

    Keys: ``start_per_hour``, ``factor``, ``enabled``; missing keys fall back
    to the relay-wide schedule. Stored with the message, so the delivering
    relay never waits on the database for it.
    """
    if tenant_id is None or domain is None or not settings.secret_key:
        return None
    row = _keys(settings.secret_key, config.dkim_ed25519).domain(tenant_id, domain)
    plan = dict(row.warmup_plan or {}) if row is not None else {}
    return plan or None


def spool_message(
    settings: Settings,
    *,
    raw: bytes,
    envelope_from: str,
    recipients: Sequence[str],
    tenant_id: uuid.UUID | str | None = None,
    ledger_ids: Sequence[int | None] | None = None,
    campaign_id: uuid.UUID | str | None = None,
    sign: bool = True,
) -> str:
    """Spool one message for delivery; return its queue id once durable."""
    config = RelayConfig.from_settings(settings)
    ledger = list(ledger_ids) if ledger_ids is not None else [None] * len(recipients)
    raw = canonical_line_endings(raw)
    envelope = Envelope(
        id=new_id(), mail_from=envelope_from,
        recipients=[Recipient(a, ledger_id=i) for a, i in zip(recipients, ledger, strict=True)],
        tenant_id=str(tenant_id) if tenant_id else None,
        campaign_id=str(campaign_id) if campaign_id else None, sender_domain=from_domain(raw),
        crlf=True,
    )
    envelope.warmup_plan = warmup_plan(settings, config, tenant_id, envelope.sender_domain)
    raw = local_received_header(hostname=config.hostname, queue_id=envelope.id) + raw
    body = (sign_canonical(settings, config, raw, tenant_id, envelope.sender_domain)
            if sign else raw)
    queue_id = _spool(config.spool_dir).write(envelope, body)
    metrics.ACCEPTED.labels(source="handoff").inc()
    return queue_id


def prepare_message(settings: Settings, config: RelayConfig,
                    message: OutboundMessage, *, sign: bool = True) -> tuple[Envelope, bytes]:
    """Return the spool envelope and the (DKIM-signed) bytes of one platform message.

    The same preparation serves the same-host hand-off and the network
    hand-off (``swiftmail_relay.intake_wire``): signing happens in the
    sending worker either way. Line endings are made CRLF once (not checked
    at all for the renderer's own output, ``message.crlf``), and the From
    domain read once, for the envelope and the signature alike.
    """
    raw = message.raw if message.crlf else canonical_line_endings(message.raw)
    envelope = Envelope(
        id=new_id(), mail_from=message.envelope_from,
        recipients=[Recipient(message.recipient, ledger_id=message.ledger_id)],
        tenant_id=str(message.tenant_id),
        campaign_id=str(message.campaign_id) if message.campaign_id else None,
        sender_domain=from_domain(raw), crlf=True,
    )
    envelope.warmup_plan = warmup_plan(settings, config, message.tenant_id,
                                       envelope.sender_domain)
    raw = local_received_header(hostname=config.hostname, queue_id=envelope.id) + raw
    body = (sign_canonical(settings, config, raw, message.tenant_id, envelope.sender_domain)
            if sign else raw)
    return envelope, body


def spool_messages(
    settings: Settings, messages: Sequence[OutboundMessage], *, sign: bool = True
) -> list[str]:
    """Spool a batch of one-recipient messages with one group commit."""
    config = RelayConfig.from_settings(settings)
    items = [prepare_message(settings, config, message, sign=sign) for message in messages]
    ids = _spool(config.spool_dir).write_many(items)
    metrics.ACCEPTED.labels(source="handoff").inc(len(ids))
    return ids
