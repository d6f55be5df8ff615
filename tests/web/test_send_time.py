"""Send time through the API: the campaign field, the tenant's zone, the schedule in stats."""

from __future__ import annotations

from swiftmail_core.db import tenant_tx
from swiftmail_core.sending.audience import resolve_audience


def _campaign(caller, **extra):  # type: ignore[no-untyped-def]
    listed = caller.post("/v1/lists", {"name": f"st-{id(extra)}"}).json
    made = caller.post("/v1/campaigns", {
        "name": "Morning", "subject": "Good morning", "html": "<p>Hi</p>",
        "from_email": "news@example.com", "list_ids": [listed["id"]], **extra})
    assert made.status_code == 201, made.text
    return made.json, listed


def test_local_send_time_is_checked_and_kept(owner_a) -> None:  # type: ignore[no-untyped-def]
    campaign, _ = _campaign(owner_a, local_send_time="09:30")
    assert campaign["local_send_time"] == "09:30"
    path = f"/v1/campaigns/{campaign['id']}"
    for bad in ("9:30", "24:00", "09:60", "09:30:00", 930, "", "noon"):
        result = owner_a.patch(path, {"local_send_time": bad})
        assert result.status_code == 422, bad
        assert result.headers["content-type"].startswith("application/problem+json")
        assert result.json["errors"][0]["field"] == "local_send_time"
        assert "HH:MM" in result.json["errors"][0]["message"] or bad == 930
    assert owner_a.patch(path, {"local_send_time": None}).json["local_send_time"] is None
    bad_create = owner_a.post("/v1/campaigns", {"name": "x", "local_send_time": "25:00"})
    assert bad_create.status_code == 422
    assert bad_create.json["errors"][0]["field"] == "local_send_time"


def test_tenant_timezone_setting_must_be_a_known_zone(owner_a) -> None:  # type: ignore[no-untyped-def]
    bad = owner_a.patch("/v1/tenant", {"settings": {"timezone": "Mars/Olympus"}})
    assert bad.status_code == 422
    assert bad.json["errors"][0]["field"] == "settings.timezone"
    good = owner_a.patch("/v1/tenant", {"settings": {"timezone": "Europe/Oslo"}})
    assert good.status_code == 200 and good.json["settings"]["timezone"] == "Europe/Oslo"
    assert "timezone" not in owner_a.patch(
        "/v1/tenant", {"settings": {"timezone": None}}).json["settings"]


def test_stats_show_the_schedule_per_hour_and_tenant_b_sees_nothing(  # type: ignore[no-untyped-def]
        owner_a, owner_b) -> None:
    assert owner_a.patch("/v1/tenant", {"settings": {"timezone": "Asia/Tokyo"}}).status_code == 200
    campaign, listed = _campaign(owner_a, local_send_time="09:00")
    for email, zone in (("tokyo@st.test", "Asia/Tokyo"), ("oslo@st.test", "Europe/Oslo"),
                        ("oslo2@st.test", "Europe/Oslo"), ("bad@st.test", "Not/AZone")):
        made = owner_a.post("/v1/contacts", {"email": email, "attributes": {"timezone": zone}})
        assert made.status_code == 201, made.text
        subscribed = owner_a.post(f"/v1/lists/{listed['id']}/subscriptions",
                                  {"contact_id": made.json["id"]})
        assert subscribed.status_code in (200, 201, 202), subscribed.text
    with tenant_tx(owner_a.tenant_id) as database:
        database.execute_sql(
            "UPDATE subscriptions SET status = 'confirmed' WHERE list_id = %s", (listed["id"],))
        # the start is a fixed day far ahead, so every row waits
        database.execute_sql(
            "UPDATE campaigns SET status = 'sending', scheduled_at = '2099-06-01T00:00:00Z' "
            "WHERE id = %s", (campaign["id"],))
    assert resolve_audience(owner_a.tenant_id, campaign["id"]) == 4
    stats = owner_a.get(f"/v1/campaigns/{campaign['id']}/stats")
    assert stats.status_code == 200, stats.text
    assert stats.json["schedule"] == {
        "local_send_time": "09:00", "timezone_fallbacks": 1, "scheduled": 4,
        "per_hour": [{"hour": "2099-06-01T00:00:00Z", "count": 2},    # Tokyo, and the bad
                     {"hour": "2099-06-01T07:00:00Z", "count": 2}]}   # zone got the tenant's
    assert owner_b.get(f"/v1/campaigns/{campaign['id']}/stats").status_code == 404
    with tenant_tx(owner_a.tenant_id) as database:
        database.execute_sql("UPDATE messages SET status = 'cancelled' WHERE campaign_id = %s",
                             (campaign["id"],))
