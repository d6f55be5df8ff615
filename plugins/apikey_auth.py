"""Built-in authentication: ``Authorization: Bearer sm_live_...`` API keys.

Also accepts the key as the SMTP AUTH password (any username), so tenants'
applications can submit to the relay with the same credential.
"""

from __future__ import annotations

from swiftmail_core.apikeys import PREFIX, authenticate_key
from swiftmail_core.hookspecs import hookimpl
from swiftmail_core.principal import Credentials, Principal
from swiftmail_core.settings import Settings


def _presented_key(credentials: Credentials) -> str | None:
    header = credentials.authorization or ""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip().startswith(PREFIX):
        return value.strip()
    if credentials.password and credentials.password.startswith(PREFIX):
        return credentials.password
    return None


@hookimpl
def swiftmail_authenticate(credentials: Credentials, settings: Settings) -> Principal | None:
    """Resolve an API key to its tenant's principal; ignore other schemes."""
    key = _presented_key(credentials)
    if key is None:
        return None
    return authenticate_key(key)
