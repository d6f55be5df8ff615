"""Peewee models over the tables that migrations create.

The schema lives in ``migrations/*.sql`` (row-level security, partitions and
grants cannot be expressed in peewee); these classes only map it. Models are
bound to the app role's handle, so every query runs under the tenant policies;
cross-tenant machinery rebinds a query with ``.bind(system_db)`` inside
``system_tx()``.
"""

from __future__ import annotations

import datetime
from typing import Any

from peewee import (
    BigIntegerField,
    BlobField,
    BooleanField,
    CharField,
    CompositeKey,
    DateTimeField,
    IntegerField,
    Model,
    TextField,
    UUIDField,
)
from playhouse.postgres_ext import ArrayField, BinaryJSONField, IPField

from swiftmail_core.contact_ids import new_contact_id
from swiftmail_core.db import app_db, current_tenant


def utcnow() -> datetime.datetime:
    """Return an aware UTC timestamp."""
    return datetime.datetime.now(datetime.UTC)


def _plural_table_name(model: type[Model]) -> str:
    return model.__name__.lower() + "s"


class BaseModel(Model):
    """Base of every model: bound to the app role's database."""

    class Meta:
        database = app_db
        table_function = _plural_table_name


class TenantModel(BaseModel):
    """A table whose rows belong to one tenant (row-level security applies).

    Inside ``tenant_tx`` every SELECT, UPDATE and DELETE built from a tenant
    model names the tenant (``tenant_id = <the transaction's tenant>``), so on
    Citus it is a single-shard (router) query; row-level security stays the
    guard, this only routes. Outside a tenant transaction (system machinery)
    queries are left as written.
    """

    tenant_id = UUIDField()

    @classmethod
    def select(cls, *fields: Any) -> Any:
        """Return a SELECT scoped to the current tenant (see the class)."""
        return cls._scoped(super().select(*fields))

    @classmethod
    def update(cls, __data: Any = None, **update: Any) -> Any:
        """Return an UPDATE scoped to the current tenant."""
        return cls._scoped(super().update(__data, **update))

    @classmethod
    def delete(cls) -> Any:
        """Return a DELETE scoped to the current tenant."""
        return cls._scoped(super().delete())

    @classmethod
    def _scoped(cls, query: Any) -> Any:
        tenant = current_tenant()
        return query if tenant is None else query.where(cls.tenant_id == tenant)


class Tenant(BaseModel):
    """An organisation using SwiftMail; everything else belongs to one."""

    id = UUIDField(primary_key=True)
    slug = CharField()
    name = TextField()
    status = CharField(default="active")
    language = CharField(default="en")
    send_rate_per_second = IntegerField(default=100)
    daily_quota = BigIntegerField(default=100_000)
    settings = BinaryJSONField(default=dict)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class User(BaseModel):
    """A person who can sign in; global across tenants."""

    id = UUIDField(primary_key=True)
    email = TextField()
    email_lower = TextField(null=True)
    name = TextField(default="")
    password_hash = TextField()
    created_at = DateTimeField(default=utcnow)
    last_login_at = DateTimeField(null=True)


class Membership(TenantModel):
    """A user's role in a tenant."""

    user_id = UUIDField()
    role = CharField()
    created_at = DateTimeField(default=utcnow)

    class Meta:
        primary_key = CompositeKey("tenant_id", "user_id")


class ApiKey(TenantModel):
    """A hashed, scoped, revocable API key."""

    id = UUIDField()
    name = TextField(default="")
    lookup_id = TextField()
    secret_hash = BlobField()
    role = CharField()
    scopes = ArrayField(TextField, default=list)
    created_by = UUIDField(null=True)
    created_at = DateTimeField(default=utcnow)
    last_used_at = DateTimeField(null=True)
    expires_at = DateTimeField(null=True)
    revoked_at = DateTimeField(null=True)

    class Meta:
        primary_key = CompositeKey("tenant_id", "id")
        table_name = "api_keys"


class Contact(TenantModel):
    """A person a tenant mails."""

    id = UUIDField(default=new_contact_id)
    email = TextField()
    email_lower = TextField(null=True)
    name = TextField(default="")
    attributes = BinaryJSONField(default=dict)
    status = CharField(default="active")
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        primary_key = CompositeKey("tenant_id", "id")


class Segment(TenantModel):
    """A saved condition over a tenant's contacts (``swiftmail_core.segments``)."""

    id = UUIDField()
    name = TextField()
    definition = BinaryJSONField()
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        primary_key = CompositeKey("tenant_id", "id")
        table_name = "segments"


class Journey(TenantModel):
    """An automated journey (``swiftmail_core.journeys``); its steps are versioned."""

    id = UUIDField()
    name = TextField()
    status = TextField(default="draft")
    trigger_type = TextField()
    trigger_key = TextField()
    trigger_days_before = IntegerField(default=0)
    trigger_yearly = BooleanField(default=False)
    current_version = IntegerField(default=1)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        primary_key = CompositeKey("tenant_id", "id")
        table_name = "journeys"


class MailingList(TenantModel):
    """A list contacts subscribe to."""

    id = UUIDField()
    name = TextField()
    description = TextField(default="")
    double_opt_in = BooleanField(default=False)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        primary_key = CompositeKey("tenant_id", "id")
        table_name = "lists"


class Subscription(TenantModel):
    """A contact's membership of a list, with its consent record."""

    list_id = UUIDField()
    contact_id = UUIDField()
    status = CharField(default="unconfirmed")
    consent_source = TextField(default="")
    consent_at = DateTimeField(null=True)
    consent_ip = IPField(null=True)
    confirmed_at = DateTimeField(null=True)
    unsubscribed_at = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        primary_key = CompositeKey("tenant_id", "list_id", "contact_id")


class Template(TenantModel):
    """A reusable email design (Jinja2, sandboxed at render time)."""

    id = UUIDField()
    name = TextField()
    subject = TextField(default="")
    preheader = TextField(default="")
    html = TextField(default="")
    text = TextField(default="")
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        primary_key = CompositeKey("tenant_id", "id")


class SendingDomain(TenantModel):
    """A domain a tenant sends from, with its DKIM keys (encrypted at rest)."""

    id = UUIDField()
    domain = TextField()
    dkim_selector = TextField()
    dkim_private_key_encrypted = BlobField()
    dkim_public_key = TextField()
    dkim_ed25519_private_key_encrypted = BlobField(null=True)
    dkim_ed25519_public_key = TextField(null=True)
    return_path_domain = TextField(default="")
    tracking_domain = TextField(default="")
    verification = BinaryJSONField(default=dict)
    verified_at = DateTimeField(null=True)
    warmup_plan = BinaryJSONField(default=dict)
    warmup_started_at = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        primary_key = CompositeKey("tenant_id", "id")
        table_name = "sending_domains"


class Campaign(TenantModel):
    """A mailing to one or more lists; see ``campaign_states`` for its lifecycle."""

    id = UUIDField()
    name = TextField()
    status = CharField(default="draft")
    template_id = UUIDField(null=True)
    subject = TextField(default="")
    preheader = TextField(default="")
    html = TextField(default="")
    text = TextField(default="")
    from_name = TextField(default="")
    from_email = TextField(default="")
    reply_to = TextField(default="")
    headers = BinaryJSONField(default=dict)
    sending_domain_id = UUIDField(null=True)
    transport = CharField(default="relay")
    list_ids = ArrayField(UUIDField, default=list)
    segment_ids = ArrayField(UUIDField, default=list)
    sunset_days = IntegerField(null=True)
    local_send_time = TextField(null=True)
    timezone_fallbacks = BigIntegerField(default=0)
    tracking_enabled = BooleanField(default=True)
    scheduled_at = DateTimeField(null=True)
    started_at = DateTimeField(null=True)
    audience_resolved_at = DateTimeField(null=True)
    finished_at = DateTimeField(null=True)
    recipient_count = BigIntegerField(default=0)
    paused_reason = TextField(null=True)
    transport_failures = IntegerField(default=0)
    ab_test_percent = IntegerField(null=True)
    ab_metric = CharField(null=True)
    ab_decide_after_seconds = IntegerField(null=True)
    ab_winner = CharField(null=True)
    ab_decided_at = DateTimeField(null=True)
    ab_decided_by = CharField(null=True)
    ab_decided_on = BinaryJSONField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        primary_key = CompositeKey("tenant_id", "id")


class CampaignVariant(TenantModel):
    """One variant of an A/B tested campaign; a NULL field falls back to the campaign's."""

    campaign_id = UUIDField()
    key = CharField()
    name = TextField(default="")
    subject = TextField(null=True)
    from_name = TextField(null=True)
    preheader = TextField(null=True)
    html = TextField(null=True)
    text = TextField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        primary_key = CompositeKey("tenant_id", "campaign_id", "key")
        table_name = "campaign_variants"


class Message(TenantModel):
    """One row of the per-recipient ledger: the outbox."""

    id = BigIntegerField()
    campaign_id = UUIDField(null=True)
    contact_id = UUIDField(null=True)
    email = TextField()
    kind = CharField(default="campaign")
    status = CharField(default="queued")
    attempts = IntegerField(default=0)
    next_attempt_at = DateTimeField(default=utcnow)
    lease_owner = TextField(null=True)
    lease_expires_at = DateTimeField(null=True)
    message_id = TextField(null=True)
    transport = TextField(default="")
    provider_message_id = TextField(null=True)
    last_error = TextField(null=True)
    payload = BinaryJSONField(default=dict)
    variant = CharField(null=True)
    resend_to = TextField(null=True)
    resend_until = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)
    sent_at = DateTimeField(null=True)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        primary_key = CompositeKey("tenant_id", "id")


class Link(TenantModel):
    """A tracked link of a campaign; click URLs carry its id, never its target."""

    id = BigIntegerField()
    campaign_id = UUIDField(null=True)
    url = TextField()
    label = TextField(default="")
    created_at = DateTimeField(default=utcnow)

    class Meta:
        primary_key = CompositeKey("tenant_id", "id")


class Event(TenantModel):
    """An append-only delivery or engagement event (partitioned by month)."""

    id = BigIntegerField()
    occurred_at = DateTimeField(default=utcnow)
    type = CharField()
    message_id = BigIntegerField(null=True)
    campaign_id = UUIDField(null=True)
    contact_id = UUIDField(null=True)
    link_id = BigIntegerField(null=True)
    bounce_class = CharField(null=True)
    is_machine = BooleanField(default=False)
    recipient_domain = TextField(null=True)
    source_key = TextField(null=True)
    detail = BinaryJSONField(default=dict)

    class Meta:
        primary_key = CompositeKey("tenant_id", "occurred_at", "id")


class CampaignRollup(TenantModel):
    """An hourly counter of one metric of one campaign."""

    campaign_id = UUIDField()
    bucket = DateTimeField()
    metric = TextField()
    dimension = TextField(default="")
    value = BigIntegerField(default=0)

    class Meta:
        primary_key = CompositeKey("tenant_id", "campaign_id", "bucket", "metric", "dimension")
        table_name = "campaign_rollups"


class Suppression(TenantModel):
    """An address the tenant must never mail, and why."""

    email_lower = TextField()
    reason = CharField()
    source = TextField(default="")
    detail = TextField(default="")
    created_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField(null=True)

    class Meta:
        primary_key = CompositeKey("tenant_id", "email_lower")


class Webhook(TenantModel):
    """A tenant URL subscribed to event types, signed with its secret."""

    id = UUIDField()
    url = TextField()
    event_types = ArrayField(TextField, default=list)
    secret_encrypted = BlobField()
    enabled = BooleanField(default=True)
    disabled_reason = TextField(null=True)
    consecutive_failures = IntegerField(default=0)
    paused_until = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        primary_key = CompositeKey("tenant_id", "id")


class WebhookDelivery(TenantModel):
    """One attempt log entry of a webhook delivery."""

    id = BigIntegerField()
    webhook_id = UUIDField()
    event_type = TextField()
    payload = BinaryJSONField()
    status = CharField(default="pending")
    attempts = IntegerField(default=0)
    next_attempt_at = DateTimeField(default=utcnow)
    lease_expires_at = DateTimeField(null=True)
    lease_token = UUIDField(null=True)
    response_status = IntegerField(null=True)
    response_excerpt = TextField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        primary_key = CompositeKey("tenant_id", "id")
        table_name = "webhook_deliveries"


class IdempotencyKey(TenantModel):
    """A stored response for a POST's Idempotency-Key (24 hours)."""

    key = TextField()
    request_hash = BlobField()
    method = TextField()
    path = TextField()
    response_status = IntegerField(null=True)
    response_body = BlobField(null=True)
    response_headers = BinaryJSONField(default=dict)
    created_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField()

    class Meta:
        primary_key = CompositeKey("tenant_id", "key")
        table_name = "idempotency_keys"


class Job(TenantModel):
    """An import or export running in the background, with progress."""

    id = UUIDField()
    kind = CharField()
    status = CharField(default="queued")
    params = BinaryJSONField(default=dict)
    progress_done = BigIntegerField(default=0)
    progress_total = BigIntegerField(null=True)
    rows_ok = BigIntegerField(default=0)
    rows_failed = BigIntegerField(default=0)
    input_key = TextField(null=True)
    result_key = TextField(null=True)
    error = TextField(null=True)
    lease_expires_at = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)
    started_at = DateTimeField(null=True)
    finished_at = DateTimeField(null=True)

    class Meta:
        primary_key = CompositeKey("tenant_id", "id")


TENANT_MODELS: tuple[type[TenantModel], ...] = (
    Membership, ApiKey, Contact, MailingList, Subscription, Template, SendingDomain,
    Campaign, Message, Link, Event, CampaignRollup, Suppression, Webhook,
    WebhookDelivery, IdempotencyKey, Job,
)
