"""The built-in API-key authentication plugin, against real PostgreSQL."""

from __future__ import annotations

import datetime

import pytest

from swiftmail_core import apikeys, tenants
from swiftmail_core.errors import AuthenticationError, ValidationError
from swiftmail_core.principal import Credentials


def test_bearer_key_resolves_to_its_tenant(plugin_manager, tenant_a) -> None:
    created = apikeys.create_api_key(tenant_a.id, role="editor", scopes=("contacts:read",))
    principal = plugin_manager.authenticate(Credentials(authorization=f"Bearer {created.key}"))
    assert principal.tenant_id == tenant_a.id
    assert principal.role == "editor"
    assert principal.can("viewer", "contacts:read")
    assert not principal.can("viewer", "campaigns:write")
    assert not principal.can("admin")
    smtp = plugin_manager.authenticate(Credentials(username="any", password=created.key))
    assert smtp.tenant_id == tenant_a.id


def test_revoked_altered_and_suspended_keys_fail(plugin_manager, tenant_a) -> None:
    created = apikeys.create_api_key(tenant_a.id, role="admin")
    altered = created.key[:-1] + ("A" if created.key[-1] != "A" else "B")
    with pytest.raises(AuthenticationError, match="unknown API key"):
        plugin_manager.authenticate(Credentials(authorization=f"Bearer {altered}"))
    with pytest.raises(AuthenticationError, match="malformed"):
        plugin_manager.authenticate(Credentials(authorization="Bearer sm_live_short"))
    tenants.set_tenant_status(str(tenant_a.id), "suspended")
    with pytest.raises(AuthenticationError, match="suspended"):
        plugin_manager.authenticate(Credentials(authorization=f"Bearer {created.key}"))
    tenants.set_tenant_status(str(tenant_a.id), "active")
    apikeys.revoke_api_key(tenant_a.id, created.id)
    with pytest.raises(AuthenticationError, match="revoked"):
        plugin_manager.authenticate(Credentials(authorization=f"Bearer {created.key}"))


def test_expired_key_fails_and_use_is_recorded(plugin_manager, tenant_a) -> None:
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
    expired = apikeys.create_api_key(tenant_a.id, role="viewer", expires_at=past)
    with pytest.raises(AuthenticationError, match="expired"):
        apikeys.authenticate_key(expired.key)
    live = apikeys.create_api_key(tenant_a.id, role="viewer")
    apikeys.authenticate_key(live.key)
    used = {key.id: key.last_used_at for key in apikeys.list_api_keys(tenant_a.id)}
    assert used[live.id] is not None


def test_another_tenants_key_cannot_be_revoked(tenant_a, tenant_b) -> None:
    created = apikeys.create_api_key(tenant_a.id, role="viewer")
    with pytest.raises(Exception, match="no active API key"):
        apikeys.revoke_api_key(tenant_b.id, created.id)
    apikeys.authenticate_key(created.key)  # still valid


def test_bad_role_and_scope_are_named() -> None:
    import uuid

    with pytest.raises(ValidationError, match="role"):
        apikeys.create_api_key(uuid.uuid4(), role="god")
    with pytest.raises(ValidationError, match="scopes"):
        apikeys.create_api_key(uuid.uuid4(), role="viewer", scopes=("everything",))
