"""The example plugin's tests run on the fixtures SwiftMail ships for plugin authors."""

pytest_plugins = ["swiftmail_core.testing"]
