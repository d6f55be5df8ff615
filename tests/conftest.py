"""SwiftMail's own tests use the fixtures it ships to plugin authors.

``swiftmail_core.testing`` holds every shared fixture (one per real service:
PostgreSQL with the roles and a migrated database, Redis, DNS, tenants, the
API and an SMTP sink); keep them there so there is one copy.
"""

pytest_plugins = ["swiftmail_core.testing"]
