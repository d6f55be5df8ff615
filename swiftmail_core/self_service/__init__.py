"""What subscribers do themselves: unsubscribe, preferences, confirm, sign up.

The public pages call these with the tenant taken from a verified signed
token (or a public form's tenant slug), never from anything else the visitor
sent. Each change is written synchronously in one ``tenant_tx``, so it holds
before the next outbox claim; its event is recorded after the commit.
"""

from swiftmail_core.self_service.changes import (
    SubscriberView,
    confirm,
    load_subscriber,
    set_preferences,
    unsubscribe,
)
from swiftmail_core.self_service.signup import signup

__all__ = [
    "SubscriberView",
    "confirm",
    "load_subscriber",
    "set_preferences",
    "signup",
    "unsubscribe",
]
