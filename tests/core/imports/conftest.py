"""Fixtures for import tests: files on disk, lists, storage, a job runner."""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path

import pytest

from swiftmail_core.db import app_db, tenant_tx


@pytest.fixture
def write_csv(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Factory: write text (optionally gzipped) to a file; return its path."""

    def factory(text: str, *, gz: bool = False, name: str = "input.csv") -> Path:
        path = tmp_path / (name + (".gz" if gz else ""))
        data = text.encode("utf-8")
        path.write_bytes(gzip.compress(data) if gz else data)
        return path

    return factory


@pytest.fixture
def make_list():  # type: ignore[no-untyped-def]
    """Factory: create a list for a tenant; return its id."""

    def factory(tenant_id: uuid.UUID, name: str = "Newsletter") -> uuid.UUID:
        list_id = uuid.uuid4()
        with tenant_tx(tenant_id):
            app_db.execute_sql(
                "INSERT INTO lists (tenant_id, id, name) VALUES (%s, %s, %s)",
                (str(tenant_id), str(list_id), name),
            )
        return list_id

    return factory


def contacts_of(tenant_id: uuid.UUID) -> dict[str, tuple[str, dict]]:  # type: ignore[type-arg]
    """Return {email_lower: (name, attributes)} of a tenant, read as the app role."""
    with tenant_tx(tenant_id):
        rows = app_db.execute_sql(
            "SELECT email_lower, name, attributes FROM contacts"
        ).fetchall()
    return {email: (name, attributes) for email, name, attributes in rows}


def subscribers_of(tenant_id: uuid.UUID, list_id: uuid.UUID) -> dict[str, tuple[str, str]]:
    """Return {email_lower: (status, consent_source)} of a list's subscriptions."""
    with tenant_tx(tenant_id):
        rows = app_db.execute_sql(
            "SELECT c.email_lower, s.status, s.consent_source FROM subscriptions s "
            "JOIN contacts c ON c.tenant_id = s.tenant_id AND c.id = s.contact_id "
            "WHERE s.list_id = %s",
            (str(list_id),),
        ).fetchall()
    return {email: (status, source) for email, status, source in rows}
