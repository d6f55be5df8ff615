"""Outgoing webhooks: signed JSON POSTs of tenant events, SSRF-safe, retried.

``urls.check_webhook_url`` is what saving a webhook calls; ``queue.enqueue_within``
(called by ``record_events`` in the same transaction) turns stored events into
deliveries; ``Dispatcher`` claims due deliveries exactly once
(``leases``), checks the address again, POSTs them concurrently with a limit
per webhook, logs, retries with backoff for a day, pauses a failing webhook
meanwhile and disables one that keeps failing (a ``webhook_disabled`` event).
"""

from swiftmail_core.webhooks.signing import SIGNATURE_HEADER, sign_payload, verify_signature
from swiftmail_core.webhooks.urls import UrlPolicy, check_webhook_url

__all__ = [
    "SIGNATURE_HEADER",
    "UrlPolicy",
    "check_webhook_url",
    "sign_payload",
    "verify_signature",
]
