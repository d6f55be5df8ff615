"""SwiftMail relay: the built-in MTA (import name ``swiftmail_relay``)."""
