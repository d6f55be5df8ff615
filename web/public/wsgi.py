"""``gunicorn swiftmail_web.public.wsgi:app``: the public endpoints alone.

For a tracking domain (or a bench): the open pixel, click redirect and
subscriber pages without the API's middleware. Settings come from the
environment and settings file exactly as for ``swiftmail serve``.
"""

from __future__ import annotations

import falcon


def get_tracking_app() -> falcon.App:
    """Load settings, connect, and build the lean public application."""
    from swiftmail_web.public import create_tracking_app
    from swiftmail_web.public.services import PublicServices

    from swiftmail_core.logs import configure_logging
    from swiftmail_core.runtime import ProcessKind, start
    from swiftmail_core.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    runtime = start(settings, process=ProcessKind.PUBLIC)
    return create_tracking_app(PublicServices.build(settings, runtime.redis, runtime.plugins))


def __getattr__(name: str) -> falcon.App:
    # NOTE: built on first access so importing this module connects nothing.
    if name == "app":
        globals()["app"] = get_tracking_app()
        return globals()["app"]
    raise AttributeError(name)
