"""SwiftMail web: the REST API, public pages and tracking endpoints (import name ``swiftmail_web``)."""
