"""Benchmark: counting and previewing a segment of 1,000,000 contacts.

Creates a scratch SwiftMail database on the local PostgreSQL (the production
``init`` path; dropped at the end), one tenant with N contacts (10% with
``plan = pro``) and opens for 20% of them over the last 60 days, then times,
as the app role inside ``tenant_tx`` like the API:

* floor: ``SELECT count(*)`` of the tenant's contacts (the cheapest full count);
* attribute: the segment ``plan = pro``;
* attribute_and_engagement: ``plan = pro`` and opened in the last 30 days;
* preview: the first page (20) of the second segment, as ``/contacts`` serves it;
* resolve: a campaign targeting the second segment resolved into the ledger
  (``sending.audience.resolve_audience``, every ledger index), against its floor:
  the same compiled condition written by one ``CREATE TEMP TABLE ... AS SELECT``
  in the same run (target: under 30 s at 1,000,000 contacts).

Prints ONE JSON line with medians and ratios to the floor; exits non-zero when
a count is not what the data says. ``--smoke`` runs 10,000 contacts.

    .venv/bin/python bench/segment_count.py [--contacts 1000000] [--repeat 5]
        [--resolve-repeat 3] [--smoke]
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import (  # noqa: E402
    Unfinished,
    analyze,
    arguments,
    median,
    run,
    scratch_install,
    timed,
)

ATTRIBUTE = {"attribute": "plan", "op": "eq", "value": "pro"}
BOTH = {"all": [ATTRIBUTE, {"event": "opened", "within_days": 30}]}


def populate(tenant_id: uuid.UUID, contacts: int) -> None:
    """Insert contacts (every 10th on plan pro) and opens (every 5th, spread over 60 days)."""
    from swiftmail_core.db import tenant_tx

    tenant = str(tenant_id)
    with tenant_tx(tenant_id) as database:
        database.execute_sql(
            "INSERT INTO contacts (tenant_id, email, attributes) "
            "SELECT %s, 'user' || i || '@example.com', jsonb_build_object("
            "'plan', CASE WHEN i %% 10 = 0 THEN 'pro' ELSE 'free' END, 'n', i) "
            "FROM generate_series(0, %s - 1) AS i", (tenant, contacts))
        database.execute_sql(
            "INSERT INTO events (tenant_id, type, contact_id, occurred_at) "
            "SELECT %s, 'opened', id, now() - make_interval(days => "
            "((attributes->>'n')::int / 5) %% 60) FROM contacts "
            "WHERE (attributes->>'n')::int %% 5 = 0", (tenant,))


def expected_counts(contacts: int) -> tuple[int, int]:
    """Return the true sizes of the two segments for the generated data."""
    pro = len(range(0, contacts, 10))
    recent = sum(1 for i in range(0, contacts, 10) if (i // 5) % 60 < 30)
    return pro, recent


def segment_campaign(tenant_id: uuid.UUID) -> str:
    """Create a saved segment (BOTH) and a sending campaign targeting only it; return its id."""
    import json

    from swiftmail_core.db import tenant_tx

    segment_id, campaign_id = str(uuid.uuid4()), str(uuid.uuid4())
    with tenant_tx(tenant_id) as database:
        database.execute_sql(
            "INSERT INTO segments (tenant_id, id, name, definition) VALUES (%s, %s, %s, %s)",
            (str(tenant_id), segment_id, f"pro-recent-{segment_id[:8]}", json.dumps(BOTH)))
        database.execute_sql(
            "INSERT INTO campaigns (tenant_id, id, name, subject, html, from_email, list_ids, "
            "segment_ids, status) VALUES (%s, %s, 'Bench', 'Hi', '<p>x</p>', 'a@b.example', "
            "'{}'::uuid[], ARRAY[%s]::uuid[], 'sending')",
            (str(tenant_id), campaign_id, segment_id))
    return campaign_id


def resolve_floor(tenant_id: uuid.UUID) -> tuple[float, int]:
    """Time the segment's compiled condition written into a temp table (no ledger indexes)."""
    from swiftmail_core.db import tenant_tx
    from swiftmail_core.segments.compiler import compile_segment
    from swiftmail_core.segments.definition import parse_definition

    compiled = compile_segment(tenant_id, parse_definition(BOTH))
    with tenant_tx(tenant_id) as database:
        seconds, cursor = timed(lambda: database.execute_sql(
            "CREATE TEMP TABLE segment_floor ON COMMIT DROP AS SELECT c.id, c.email "
            f"FROM contacts c WHERE c.tenant_id = %s AND c.status = 'active' AND ({compiled.sql})",
            (str(tenant_id), *compiled.params)))
        return seconds, int(cursor.rowcount)


def measure(args: argparse.Namespace) -> Mapping[str, Any]:
    """Set up, measure, tear down; return the figures (Unfinished when a count is wrong)."""
    with scratch_install() as env:
        from swiftmail_core.db import tenant_tx
        from swiftmail_core.models import Contact
        from swiftmail_core.runtime import ProcessKind, start
        from swiftmail_core.segments.service import count_matching, matching_contacts
        from swiftmail_core.settings import load_settings
        from swiftmail_core.tenants import create_tenant

        runtime = start(load_settings(), process=ProcessKind.BENCH)
        tenant = create_tenant(f"bench-{uuid.uuid4().hex[:8]}")
        setup_seconds, _ = timed(lambda: populate(tenant.id, args.contacts))
        analyze(env["DATABASE_URL"], "contacts, events")

        def in_tenant(function):  # type: ignore[no-untyped-def]
            def run():  # type: ignore[no-untyped-def]
                with tenant_tx(tenant.id):
                    return function()
            return run

        measures: dict[str, list[float]] = {"floor": [], "attribute": [],
                                            "attribute_and_engagement": [], "preview": []}
        results: dict[str, int] = {}
        for _ in range(args.repeat):
            for name, function in (
                ("floor", lambda: Contact.select().count()),
                ("attribute", lambda: count_matching(tenant.id, ATTRIBUTE)),
                ("attribute_and_engagement", lambda: count_matching(tenant.id, BOTH)),
                ("preview", lambda: len(list(matching_contacts(tenant.id, BOTH)
                                            .order_by(Contact.created_at, Contact.id)
                                            .limit(20)))),
            ):
                seconds, result = timed(in_tenant(function))
                measures[name].append(seconds)
                results[name] = result
        from swiftmail_core.sending.audience import resolve_audience

        resolves: dict[str, list[float]] = {"resolve_floor": [], "resolve": []}
        for _ in range(args.resolve_repeat):
            seconds, results["resolve_floor"] = resolve_floor(tenant.id)
            resolves["resolve_floor"].append(seconds)
            campaign_id = segment_campaign(tenant.id)
            seconds, results["resolve"] = timed(lambda c=campaign_id: resolve_audience(tenant.id, c))
            resolves["resolve"].append(seconds)
        runtime.close()
    pro, recent = expected_counts(args.contacts)
    complete = (results["floor"] == args.contacts and results["attribute"] == pro
                and results["attribute_and_engagement"] == recent
                and results["preview"] == min(20, recent)
                and results.get("resolve", recent) == recent
                and results.get("resolve_floor", recent) == recent)
    if not complete:
        raise Unfinished(f"wrong counts {results}: expected {args.contacts} contacts, "
                         f"{pro} pro, {recent} pro and recent")
    medians = {name: median(values, 6) for name, values in measures.items()}
    return {
        "contacts": args.contacts,
        "repeat": args.repeat,
        "complete": complete,
        "counts": results,
        **{f"{name}_ms": round(value * 1000, 1) for name, value in medians.items()},
        **{f"{name}_vs_floor": round(value / medians["floor"], 2)
           for name, value in medians.items() if name != "floor"},
        **({"resolve_s": round(median(resolves["resolve"], 4), 2),
            "resolve_floor_s": round(median(resolves["resolve_floor"], 4), 2),
            "resolve_vs_floor": round(median(resolves["resolve"], 6)
                                      / median(resolves["resolve_floor"], 6), 2),
            "resolve_target_s": 30, "resolve_repeat": args.resolve_repeat}
           if args.resolve_repeat else {}),
        "setup_s": round(setup_seconds, 1),
    }


def parser() -> argparse.ArgumentParser:
    """Return the benchmark's arguments, ``--smoke`` included."""
    options = arguments(__doc__, smoke={"contacts": 10_000, "repeat": 2, "resolve_repeat": 1})
    options.add_argument("--contacts", type=int, default=1_000_000)
    options.add_argument("--repeat", type=int, default=5)
    options.add_argument("--resolve-repeat", type=int, default=3,
                         help="Campaigns resolved from the segment (0: skip).")
    return options


if __name__ == "__main__":
    run("segment_count", measure, parser())
