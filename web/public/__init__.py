"""Public endpoints: tracking, subscriber pages and the sign-up form (no login)."""

from __future__ import annotations

import falcon
from swiftmail_web.public.pages import (
    ConfirmResource,
    PreferencesResource,
    SubscribeResource,
    UnsubscribeResource,
    WebViewResource,
)
from swiftmail_web.public.services import PublicServices
from swiftmail_web.public.tracking import ClickResource, OpenPixelResource

PUBLIC_ROUTES = (
    ("/t/o/{token}.gif", OpenPixelResource),
    ("/t/c/{token}", ClickResource),
    ("/u/{token}", UnsubscribeResource),
    ("/p/{token}", PreferencesResource),
    ("/confirm/{token}", ConfirmResource),
    ("/v/{token}", WebViewResource),
    ("/subscribe/{tenant_slug}/{list_id}", SubscribeResource),
)


def add_public_routes(app: falcon.App, services: PublicServices) -> None:
    """Add every public route to ``app``."""
    for path, resource in PUBLIC_ROUTES:
        app.add_route(path, resource(services))


def create_tracking_app(services: PublicServices) -> falcon.App:
    """Build a lean app with only the public routes (for a tracking domain)."""
    app = falcon.App()
    add_public_routes(app, services)
    return app
