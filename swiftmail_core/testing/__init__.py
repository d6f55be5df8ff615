"""Fixtures for testing SwiftMail and its plugins against real services (a pytest plugin).

Load it from a ``conftest.py`` at the top of your tests::

    pytest_plugins = ["swiftmail_core.testing"]

It gives one fixture per real service, all backed by the same code paths as
production (see docs/plugins.md, "Testing your plugin"):

- ``services``: ``settings``, ``test_environ`` (the environment a SwiftMail
  subprocess of this run needs), ``targets`` (a fresh database, initialised
  and migrated by ``swiftmail init``'s code, dropped at the end), ``runtime``,
  ``plugin_manager`` (installed plugins, yours included), ``redis_url``,
  ``redis_client``, ``session_dns``, ``owner_connection``, ``app_connection``.
- ``tenants``: ``make_tenant``, ``tenant_a``, ``tenant_b`` and
  ``tenant_database`` (the app role inside ``tenant_tx`` of ``tenant_a``).
- ``api``: ``app`` (``create_app`` with every plugin's routes), ``client``,
  ``make_caller``, ``owner_a``, ``viewer_a``, ``editor_a``, ``owner_b``.
- ``smtp_sink``: a counting aiosmtpd sink on loopback.

Servers are found, never started on the network: PostgreSQL from
``SWIFTMAIL_TEST_ADMIN_URL`` or 127.0.0.1:5432, Redis from
``SWIFTMAIL_TEST_REDIS_URL`` or 127.0.0.1:6379, else embedded ones.
"""

pytest_plugins = [
    "swiftmail_core.testing.services",
    "swiftmail_core.testing.tenants",
    "swiftmail_core.testing.api",
    "swiftmail_core.testing.smtp_sink",
]
