"""SwiftMail's built-in plugins (import name ``swiftmail_plugins``).

Each module here is registered through the ``swiftmail`` entry-point group in
``setup.cfg``, exactly as a third-party plugin would be.
"""
