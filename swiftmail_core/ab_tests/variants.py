"""A campaign's A/B test settings and variants, edited before it starts.

Variants are keyed ``A`` to ``E`` in the order given. A content field a
variant leaves unset (None) falls back to the campaign's, so a subject test
names only subjects. Every write also moves the campaign's ``updated_at``: the
workers' renderer cache is keyed on it, so a changed variant is never rendered
from a stale compile.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from swiftmail_core.db import tenant_tx
from swiftmail_core.errors import ConflictError, NotFoundError, ValidationError
from swiftmail_core.models import Campaign, CampaignVariant, utcnow

KEYS = ("A", "B", "C", "D", "E")
MIN_VARIANTS, MAX_VARIANTS = 2, len(KEYS)
#: Content a variant may set; unset (None) falls back to the campaign's.
CONTENT_FIELDS = ("subject", "from_name", "preheader", "html", "text")
METRICS = ("opens", "clicks", "manual")
EDITABLE = ("draft", "scheduled")
DEFAULT_TEST_PERCENT = 20
DEFAULT_DECIDE_AFTER_SECONDS = 4 * 3600


@dataclasses.dataclass(frozen=True)
class AbSettings:
    """How a campaign's test runs: its share, how the winner is picked, and when."""

    test_percent: int = DEFAULT_TEST_PERCENT
    metric: str = "opens"
    decide_after_seconds: int = DEFAULT_DECIDE_AFTER_SECONDS


def variant_campaign(campaign: Mapping[str, Any],
                     variant: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return the campaign as ``variant`` sends it (its set fields over the campaign's)."""
    merged = dict(campaign)
    for field in CONTENT_FIELDS:
        value = (variant or {}).get(field)
        if value is not None:
            merged[field] = value
    return merged


def _check_variant(index: int, campaign: Mapping[str, Any], variant: Mapping[str, Any]) -> None:
    """Compile the variant's content as it will be sent; errors name ``variants[i].field``."""
    from swiftmail_core.rendering import validate_template
    from swiftmail_core.rendering.headers import refuse_line_breaks

    merged = variant_campaign(campaign, variant)
    try:
        refuse_line_breaks("from_name", merged.get("from_name") or "")
        validate_template(merged.get("subject") or "", merged.get("html") or "",
                          merged.get("text") or "", merged.get("preheader") or "")
    except ValidationError as ex:
        errors = [{**error, "field": f"variants[{index}].{error.get('field', '')}".rstrip(".")}
                  for error in ex.errors] or [{"field": f"variants[{index}]", "message": ex.detail}]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:3])
        raise ValidationError(f"invalid variant {KEYS[index]}: {summary}", errors=errors) from ex


def _editable(tenant_id: uuid.UUID | str, campaign_id: uuid.UUID) -> Campaign:
    """Lock the campaign and refuse unless it is a draft or scheduled (in tenant_tx)."""
    # NOTE: the tenant is named, not only implied by row-level security: on
    # Citus a row lock needs a single-shard query.
    campaign = Campaign.select().where(Campaign.tenant_id == tenant_id,
                                       Campaign.id == campaign_id).for_update().first()
    if campaign is None:
        raise NotFoundError(f"no campaign {campaign_id}")
    if campaign.status not in EDITABLE:
        raise ConflictError(f"campaign is {campaign.status}; its A/B test can be changed only "
                            "while it is a draft or scheduled")
    return campaign


def set_ab_test(tenant_id: uuid.UUID | str, campaign_id: uuid.UUID, settings: AbSettings,
                variants: Sequence[Mapping[str, Any]]) -> None:
    """Replace the campaign's A/B test with ``settings`` and ``variants`` (2 to 5)."""
    if not MIN_VARIANTS <= len(variants) <= MAX_VARIANTS:
        raise ValidationError.for_field(
            "variants", f"give {MIN_VARIANTS} to {MAX_VARIANTS} variants (got {len(variants)})")
    if settings.metric not in METRICS:
        raise ValidationError.for_field("metric", f"must be one of {', '.join(METRICS)}")
    if not 1 <= settings.test_percent <= 100:
        raise ValidationError.for_field("test_percent", "must be between 1 and 100")
    with tenant_tx(tenant_id):
        campaign = _editable(tenant_id, campaign_id)
        current = dict(campaign.__data__)
        for index, variant in enumerate(variants):
            _check_variant(index, current, variant)
        now = utcnow()
        CampaignVariant.delete().where(CampaignVariant.tenant_id == tenant_id,
                                CampaignVariant.campaign_id == campaign_id).execute()
        CampaignVariant.insert_many([
            {"tenant_id": campaign.tenant_id, "campaign_id": campaign_id, "key": key,
             "name": variant.get("name") or "", "created_at": now, "updated_at": now,
             **{field: variant.get(field) for field in CONTENT_FIELDS}}
            for key, variant in zip(KEYS, variants, strict=False)]).execute()
        Campaign.update(
            ab_test_percent=settings.test_percent, ab_metric=settings.metric,
            ab_decide_after_seconds=settings.decide_after_seconds, updated_at=now,
        ).where(Campaign.tenant_id == tenant_id, Campaign.id == campaign_id).execute()


def remove_ab_test(tenant_id: uuid.UUID | str, campaign_id: uuid.UUID) -> None:
    """Drop the campaign's A/B test: it sends its own content to everyone again."""
    with tenant_tx(tenant_id):
        campaign = _editable(tenant_id, campaign_id)
        if campaign.ab_metric is None:
            raise NotFoundError(f"campaign {campaign_id} has no A/B test")
        CampaignVariant.delete().where(CampaignVariant.tenant_id == tenant_id,
                                CampaignVariant.campaign_id == campaign_id).execute()
        Campaign.update(ab_test_percent=None, ab_metric=None, ab_decide_after_seconds=None,
                        updated_at=utcnow()).where(Campaign.tenant_id == tenant_id,
                                                   Campaign.id == campaign_id).execute()


def load_variants(database: Any, tenant_id: uuid.UUID | str,
                  campaign_id: uuid.UUID | str) -> dict[str, dict[str, Any]]:
    """Return the campaign's variants by key (inside the caller's transaction, any role)."""
    cursor = database.execute_sql(
        "SELECT key, name, subject, from_name, preheader, html, text FROM campaign_variants "
        "WHERE tenant_id = %s AND campaign_id = %s ORDER BY key",
        (str(tenant_id), str(campaign_id)))
    names = [column[0] for column in cursor.description]
    return {row[0]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}
