"""Prometheus metrics of the relay (served by ``swiftmail relay run``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

QUEUE_DEPTH = Gauge("swiftmail_relay_queue_messages", "Messages in the spool, by state.",
                    ["state"])
# ``provider``: the destination's provider group (relay/shaping.py: google, microsoft,
# yahoo, apple and any configured provider_groups) or "other"; bounded by the config.
DELIVERIES = Counter("swiftmail_relay_deliveries_total", "Recipients delivered, by provider.",
                     ["provider"])
DEFERRALS = Counter("swiftmail_relay_deferrals_total",
                    "Recipient deferrals, by provider and class.", ["provider", "bounce_class"])
BOUNCES = Counter("swiftmail_relay_bounces_total", "Recipients bounced, by provider and class.",
                  ["provider", "bounce_class"])
OVERDUE = Counter("swiftmail_relay_overdue_total",
                  "Messages found due, idle and unqueued past overdue_after (a lost wake-up), "
                  "rescheduled by the watchdog.")
EXPIRIES = Counter("swiftmail_relay_expiries_total", "Recipients expired after max age.")
CONNECTIONS = Counter("swiftmail_relay_connections_total", "SMTP connections opened, by TLS use.",
                      ["tls"])
TLS_FAILURES = Counter("swiftmail_relay_tls_failures_total", "STARTTLS handshakes that failed.")
THROTTLE_WAITS = Counter("swiftmail_relay_throttle_waits_total",
                         "Internal deferrals by a throttle or warm-up cap.", ["reason"])
SIGNING_SECONDS = Histogram("swiftmail_relay_signing_seconds", "Time to DKIM-sign one message.",
                            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.05))
ACCEPTED = Counter("swiftmail_relay_accepted_total", "Messages accepted into the spool, by source.",
                   ["source"])
TLS_SESSIONS = Counter("swiftmail_relay_tls_sessions_total",
                       "Outbound sessions under a TLS policy (MTA-STS, DANE), by policy type "
                       "and RFC 8460 result ('success' or a failure result type).",
                       ["policy", "result"])
TLS_POLICY_DEFERRALS = Counter("swiftmail_relay_tls_policy_deferrals_total",
                               "MX hosts skipped because an enforced TLS policy failed.",
                               ["policy"])
TLS_CERTIFICATE_EXPIRY = Gauge("swiftmail_relay_tls_certificate_expiry_timestamp_seconds",
                               "When the relay's server certificate (tls_cert) as last loaded "
                               "expires (Unix time).")
