"""Turn claimed ledger rows into ``OutboundMessage``s through the renderer.

The worker loads, as the system role, what rendering needs (campaign,
tenant, sending domain, tracked links, contacts and the list each contact
is on) and keeps one renderer per campaign for a short while, so a
campaign's MIME skeleton is built once and only the personal parts change.
Rendering itself belongs to ``swiftmail_core.rendering``.
"""

from __future__ import annotations

import email
import email.policy
import logging
import threading
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from typing import Any

from swiftmail_core.ab_tests.variants import load_variants, variant_campaign
from swiftmail_core.db import system_tx
from swiftmail_core.db.by_key import rows_by_key
from swiftmail_core.db.conflicts import retry_on_conflict
from swiftmail_core.plugins import PluginManager
from swiftmail_core.rendering import CampaignRenderer
from swiftmail_core.sending.outbox import ClaimedMessage
from swiftmail_core.settings import Settings
from swiftmail_core.transports import OutboundMessage

log = logging.getLogger(__name__)
#: Compiled campaign renderers one process keeps (least recently used dropped first).
RENDERER_CACHE_SIZE = 256


def _renderer_class() -> Any:
    """Return the renderer class (a seam for tests)."""
    return CampaignRenderer


def _fetch_dicts(database: Any, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    cursor = database.execute_sql(sql, params)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


class Composer:
    """Build outbound messages for claimed rows, caching renderers per campaign."""

    def __init__(self, settings: Settings, plugins: PluginManager) -> None:
        self.settings = settings
        self.plugins = plugins
        self._renderers: OrderedDict[tuple[Any, ...], tuple[Any, list[str]]] = OrderedDict()
        self._lock = threading.Lock()

    def _load_campaign(
        self, database: Any, tenant_id: uuid.UUID, campaign_id: uuid.UUID, variant: str | None
    ) -> tuple[Any, list[str]]:
        (campaign,) = _fetch_dicts(
            database, "SELECT * FROM campaigns WHERE tenant_id = %s AND id = %s",
            (str(tenant_id), str(campaign_id)))
        content = campaign
        if variant is not None:
            # An A/B row renders its variant's content (unset fields: the campaign's).
            found = load_variants(database, tenant_id, campaign_id).get(variant)
            if found is None:
                raise LookupError(f"campaign {campaign_id} has no variant {variant!r}")
            content = variant_campaign(campaign, found)
        return self._build(database, tenant_id, content), [str(i) for i in campaign["list_ids"]]

    def _build(self, database: Any, tenant_id: uuid.UUID, campaign: dict[str, Any]) -> Any:
        (tenant,) = _fetch_dicts(database, "SELECT * FROM tenants WHERE id = %s", (str(tenant_id),))
        domain = None
        if campaign.get("sending_domain_id"):
            found = _fetch_dicts(
                database, "SELECT * FROM sending_domains WHERE tenant_id = %s AND id = %s",
                (str(tenant_id), str(campaign["sending_domain_id"])))
            domain = found[0] if found else None
        link_ids: dict[str, int] = {}
        owner = (("campaign_id", campaign["id"]) if campaign.get("id")
                 else ("journey_id", campaign["journey_id"]) if campaign.get("journey_id")
                 else None)
        if owner is not None:
            for link in _fetch_dicts(
                database, f"SELECT id, url FROM links WHERE tenant_id = %s AND {owner[0]} = %s",
                (str(tenant_id), str(owner[1]))):
                link_ids[link["url"]] = int(link["id"])
        return _renderer_class()(campaign, tenant, domain, self.settings, self.plugins, link_ids)

    def _renderer(
        self, database: Any, tenant_id: uuid.UUID, campaign_id: uuid.UUID,
        variant: str | None = None,
    ) -> tuple[Any, list[str]]:
        """Return the campaign's (or its variant's) renderer, rebuilt whenever it changed.

        Keyed on the campaign's ``updated_at`` (one indexed lookup per batch) and
        the A/B variant, so an edit reaches the very next message in every
        worker process (editing a variant moves the campaign's ``updated_at``
        too); at most ``RENDERER_CACHE_SIZE`` renderers are kept, least
        recently used first out.
        """
        row = database.execute_sql(
            "SELECT updated_at FROM campaigns WHERE tenant_id = %s AND id = %s",
            (str(tenant_id), str(campaign_id))).fetchone()
        key = (tenant_id, campaign_id, row[0] if row else None, variant)
        with self._lock:
            cached = self._renderers.get(key)
            if cached is not None:
                self._renderers.move_to_end(key)
                return cached
        renderer, list_ids = self._load_campaign(database, tenant_id, campaign_id, variant)
        with self._lock:
            self._renderers[key] = (renderer, list_ids)
            while len(self._renderers) > RENDERER_CACHE_SIZE:
                self._renderers.popitem(last=False)
        return renderer, list_ids

    @retry_on_conflict
    def compose(
        self, claimed: Sequence[ClaimedMessage]
    ) -> tuple[list[OutboundMessage], dict[int, str]]:
        """Render claimed rows; return the messages and {ledger_id: error} for failures."""
        messages: list[OutboundMessage] = []
        failures: dict[int, str] = {}
        groups: dict[tuple[uuid.UUID, uuid.UUID | None, str | None],
                     list[ClaimedMessage]] = defaultdict(list)
        for row in claimed:
            groups[(row.tenant_id, row.campaign_id, row.variant)].append(row)
        with system_tx() as database:
            for (tenant_id, campaign_id, variant), rows in groups.items():
                renderer: Any = None
                list_ids: list[str] = []
                broken = ""
                if campaign_id is not None:
                    try:
                        renderer, list_ids = self._renderer(database, tenant_id, campaign_id,
                                                            variant)
                    except Exception as ex:  # NOTE: a broken campaign fails its rows only
                        log.warning("campaign %s cannot render: %s", campaign_id, ex)
                        broken = f"rendering failed: {ex}"
                        failures.update({r.ledger_id: broken for r in rows
                                         if not r.payload.get("override")})
                        rows = [r for r in rows if r.payload.get("override")]
                contacts = _contacts(database, tenant_id, list_ids,
                                     [r.contact_id for r in rows if r.contact_id])
                for row in rows:
                    try:
                        messages.append(self._compose_one(database, row, renderer, contacts))
                    except Exception as ex:  # NOTE: one bad row must not sink the batch
                        log.warning("rendering ledger row %s failed: %s", row.ledger_id, ex)
                        failures[row.ledger_id] = f"rendering failed: {ex}"
        return messages, failures

    def sent_html(self, database: Any, tenant_id: uuid.UUID, ledger_id: int) -> str | None:
        """Render a ledger row's HTML exactly as it was sent (the "view in browser" page).

        The same code path as sending: the campaign's renderer, its sandbox and
        limits, the recipient's context (``tenant``, ``unsubscribe_url``, tracked
        links). Returns None for a row without an HTML part. Raises what the
        renderer raises (a render limit, a template error) for the caller to show.
        """
        found = _fetch_dicts(
            database, "SELECT id, tenant_id, campaign_id, contact_id, email, kind, transport, "
            "attempts, payload, variant FROM messages WHERE tenant_id = %s AND id = %s",
            (str(tenant_id), ledger_id))
        if not found:
            return None
        data = found[0]
        row = ClaimedMessage(
            ledger_id=int(data["id"]), tenant_id=tenant_id,
            campaign_id=_as_uuid(data["campaign_id"]), contact_id=_as_uuid(data["contact_id"]),
            email=data["email"], kind=data["kind"], transport=data["transport"],
            attempts=int(data["attempts"]), payload=data["payload"] or {}, lease_owner="",
            variant=data["variant"])
        renderer, list_ids = (self._renderer(database, tenant_id, row.campaign_id, row.variant)
                              if row.campaign_id is not None else (None, []))
        contacts = _contacts(database, tenant_id, list_ids,
                             [row.contact_id] if row.contact_id else [])
        message = self._compose_one(database, row, renderer, contacts)
        body = email.message_from_bytes(message.raw, policy=email.policy.default).get_body(
            ("html",))
        return body.get_content() if body is not None else None

    def _compose_one(
        self, database: Any, row: ClaimedMessage, renderer: Any,
        contacts: dict[str, dict[str, Any]],
    ) -> OutboundMessage:
        contact = dict(contacts.get(str(row.contact_id), {})) or {
            "id": None, "email": row.email, "name": "", "attributes": {}, "list_id": None}
        contact["email"] = row.email
        list_id = contact.pop("list_id", None)
        override = row.payload.get("override") if row.campaign_id is not None else None
        if override:
            (campaign,) = _fetch_dicts(
                database, "SELECT * FROM campaigns WHERE tenant_id = %s AND id = %s",
                (str(row.tenant_id), str(row.campaign_id)))
            renderer = self._build(database, row.tenant_id, {**campaign, **override})
        elif renderer is None:
            renderer = self._build(database, row.tenant_id, transactional_campaign(row))
            # Transactional data is ``data`` in templates (and, as before,
            # ``contact.data`` and ``attributes.data``).
            data = dict(row.payload.get("data") or {})
            contact["data"] = data
            contact["attributes"] = {**dict(contact.get("attributes") or {}), "data": data}
        rendered = renderer.render(row.ledger_id, contact, list_id)
        return OutboundMessage(
            ledger_id=row.ledger_id, tenant_id=row.tenant_id,
            envelope_from=rendered.envelope_from, recipient=rendered.recipient or row.email,
            raw=rendered.raw, message_id=rendered.message_id, campaign_id=row.campaign_id,
            metadata={"kind": row.kind, "attempt": row.attempts}, resend_to=row.resend_to,
            crlf=rendered.crlf,
        )


def _contacts(database: Any, tenant_id: uuid.UUID, list_ids: Sequence[str],
              contact_ids: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Return the contacts to render for, by id, each with the list it came through.

    One key probe per contact (``db/by_key.py``): a new tenant's first
    campaign no longer reads all its contacts for every batch.
    """
    return {
        str(contact["id"]): contact
        for contact in _fetch_dicts(
            database,
            "SELECT c.id, c.email, c.name, c.attributes, c.status, c.created_at, "
            "(SELECT s.list_id FROM subscriptions s WHERE s.tenant_id = %s "
            " AND s.contact_id = c.id AND s.list_id = ANY (%s::uuid[]) "
            " ORDER BY s.status = 'confirmed' DESC LIMIT 1) AS list_id "
            f"FROM {rows_by_key('contacts', 'c', id_type='uuid')}",
            (str(tenant_id), list(list_ids), [str(c) for c in contact_ids], str(tenant_id)))
    }


def _as_uuid(value: Any) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    return uuid.UUID(str(value))


def transactional_campaign(row: ClaimedMessage) -> dict[str, Any]:
    """Return the campaign-shaped dict a transactional message renders from."""
    payload = row.payload
    journey = row.kind == "journey"
    return {
        "id": None, "tenant_id": row.tenant_id, "name": "transactional",
        "subject": payload.get("subject", ""), "preheader": "",
        "html": payload.get("html", ""), "text": payload.get("text", ""),
        "from_email": payload.get("from_email", ""), "from_name": payload.get("from_name", ""),
        "reply_to": payload.get("reply_to", ""), "headers": {}, "sending_domain_id": None,
        "transport": row.transport, "list_ids": [],
        # A journey email is marketing mail: its opens and clicks count (stats,
        # "opened/clicked the previous email" branches). Its links were registered
        # under the journey when the step ran (rows queued before that carry no
        # track_links flag and keep their links as written).
        "tracking_enabled": journey, "track_links": journey and bool(payload.get("track_links")),
        "journey_id": payload.get("journey_id") if journey else None,
        "template_id": payload.get("template_id"),
    }
