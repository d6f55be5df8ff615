"""Subscriber pages: unsubscribe, preference centre, double opt-in, sign-up, web view.

No cookies, no sessions, no external assets. A GET never changes anything
(mail scanners follow links); every change is a POST on a signed-token URL.
The tenant always comes from the verified token (or the form's tenant slug).
"""

from __future__ import annotations

import time
import urllib.parse
import uuid
from typing import Any

import falcon
import redis
import structlog
from swiftmail_web.public.render import render_page

from swiftmail_core import self_service, tokens
from swiftmail_core.db import app_db, tenant_tx
from swiftmail_core.errors import NotFoundError, ValidationError
from swiftmail_core.self_service.signup import find_public_list

log = structlog.get_logger("swiftmail.public")
FORM_LIMIT = 16 * 1024
ONE_CLICK = "List-Unsubscribe=One-Click"
PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
WEB_VIEW_CSP = ("default-src 'none'; img-src https: http: data:; style-src 'unsafe-inline'; "
                "font-src https: data:; frame-ancestors 'none'")


def _page(resp: falcon.Response, html: str, status: str = falcon.HTTP_200) -> None:
    resp.status = status
    resp.content_type = "text/html; charset=utf-8"
    resp.text = html
    resp.cache_control = ["no-store"]
    resp.set_header("Content-Security-Policy", PAGE_CSP)
    # NOTE: same-origin, not no-referrer: tokens in these URLs still never leave the site,
    # and the page's own form posts carry a real Origin (no-referrer sends "null",
    # which the sign-up form must refuse since any website can send it).
    resp.set_header("Referrer-Policy", "same-origin")
    resp.set_header("X-Content-Type-Options", "nosniff")


def html_error(resp: falcon.Response, status: str, title: str, text: str,
               *, language: str = "en", tenant_name: str = "") -> None:
    """Answer a plain, styled error page (never JSON, never a redirect)."""
    _page(resp, render_page("message.html", language=language, tenant_name=tenant_name,
                            title=title, text=text), status)


def read_form(req: falcon.Request) -> dict[str, list[str]]:
    """Return the url-encoded body as lists of values (bounded in size)."""
    length = req.content_length or 0
    if length > FORM_LIMIT:
        raise falcon.HTTPPayloadTooLarge()
    body = req.bounded_stream.read(FORM_LIMIT + 1) if length or req.content_length is None else b""
    if len(body) > FORM_LIMIT:
        raise falcon.HTTPPayloadTooLarge()
    return urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


class _Public:
    public = True
    tenant_transaction = False

    def __init__(self, services: Any) -> None:
        self.services = services

    @property
    def secret(self) -> str:
        return self.services.secret_key


def _not_found(resp: falcon.Response) -> None:
    html_error(resp, falcon.HTTP_404, "Link not found",
               "This link is not valid. Please check that it was copied completely.")


class UnsubscribeResource(_Public):
    """``/u/{token}``: GET confirms, POST (page or RFC 8058 one-click) unsubscribes."""

    def _read(self, token: str) -> tokens.UnsubscribeToken | None:
        try:
            return tokens.read_unsubscribe_token(self.secret, token)
        except ValidationError:
            return None

    def _context(self, view: self_service.SubscriberView, found: tokens.UnsubscribeToken,
                 token: str) -> dict[str, Any]:
        choice = view.list_named(found.list_id)
        preferences = tokens.make_preferences_token(self.secret, found.tenant_id, found.contact_id)
        return {
            "language": view.language, "tenant_settings": view.tenant_settings,
            "tenant_name": view.tenant_name, "email": view.email,
            "list_name": choice.name if choice else None,
            "action": f"/u/{token}", "preferences_url": f"/p/{preferences}",
        }

    def on_get(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        """Show the confirmation page; change nothing."""
        found = self._read(token)
        if found is None:
            return _not_found(resp)
        try:
            view = self_service.load_subscriber(found.tenant_id, found.contact_id)
        except NotFoundError:
            return _not_found(resp)
        _page(resp, render_page("unsubscribe.html", **self._context(view, found, token)))

    def on_post(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        """Unsubscribe; the one-click body gets a bare 200, the form a page."""
        found = self._read(token)
        form = read_form(req)
        one_click = form.get("List-Unsubscribe") == ["One-Click"]
        if found is None:
            if one_click:
                resp.status, resp.content_type, resp.text = falcon.HTTP_404, "text/plain", "invalid"
                return None
            return _not_found(resp)
        try:
            self_service.unsubscribe(
                found.tenant_id, found.contact_id, found.list_id,
                source="one-click" if one_click else "page", plugins=self.services.plugins,
            )
        except NotFoundError:
            if one_click:  # nobody to unsubscribe: nothing more to do
                resp.content_type, resp.text = "text/plain", "unsubscribed"
                return None
            return _not_found(resp)
        if one_click:
            resp.content_type, resp.text = "text/plain", "unsubscribed"
            return None
        view = self_service.load_subscriber(found.tenant_id, found.contact_id)
        _page(resp, render_page("unsubscribed.html", **self._context(view, found, token)))
        return None


class PreferencesResource(_Public):
    """``/p/{token}``: per-list choices and "unsubscribe from everything"."""

    def _read(self, token: str) -> tokens.PreferencesToken | None:
        try:
            return tokens.read_preferences_token(self.secret, token)
        except ValidationError:
            return None

    def _render(self, resp: falcon.Response, view: self_service.SubscriberView, token: str,
                saved: bool = False) -> None:
        _page(resp, render_page(
            "preferences.html", language=view.language, tenant_settings=view.tenant_settings,
            tenant_name=view.tenant_name, email=view.email, lists=view.lists,
            action=f"/p/{token}", saved=saved,
        ))

    def on_get(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        """Show the contact's lists with their current choices."""
        found = self._read(token)
        if found is None:
            return _not_found(resp)
        try:
            view = self_service.load_subscriber(found.tenant_id, found.contact_id)
        except NotFoundError:
            return _not_found(resp)
        self._render(resp, view, token)
        return None

    def on_post(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        """Save the choices, or unsubscribe from everything."""
        found = self._read(token)
        if found is None:
            return _not_found(resp)
        form = read_form(req)
        try:
            if form.get("action") == ["unsubscribe_all"]:
                self_service.unsubscribe(found.tenant_id, found.contact_id, None,
                                         source="preferences", plugins=self.services.plugins)
                view = self_service.load_subscriber(found.tenant_id, found.contact_id)
            else:
                chosen = []
                for value in form.get("list", []):
                    try:
                        chosen.append(uuid.UUID(value))
                    except ValueError:
                        continue
                view = self_service.set_preferences(found.tenant_id, found.contact_id, chosen,
                                                    plugins=self.services.plugins)
        except NotFoundError:
            return _not_found(resp)
        self._render(resp, view, token, saved=True)
        return None


class ConfirmResource(_Public):
    """``/confirm/{token}``: GET asks, POST confirms a double opt-in."""

    def _load(self, token: str) -> tuple[tokens.ConfirmToken, Any, Any] | None:
        try:
            found = tokens.read_confirm_token(self.secret, token)
            view = self_service.load_subscriber(found.tenant_id, found.contact_id)
        except (ValidationError, NotFoundError):
            return None
        choice = view.list_named(found.list_id)
        if choice is None:
            return None
        return found, view, choice

    def _render(self, resp: falcon.Response, view: Any, choice: Any, token: str,
                confirmed: bool) -> None:
        _page(resp, render_page(
            "confirm.html", language=view.language, tenant_settings=view.tenant_settings,
            tenant_name=view.tenant_name, email=view.email, list_name=choice.name,
            action=f"/confirm/{token}", confirmed=confirmed,
        ))

    def on_get(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        """Show the confirmation button (a GET changes nothing)."""
        loaded = self._load(token)
        if loaded is None:
            return _not_found(resp)
        _found, view, choice = loaded
        self._render(resp, view, choice, token, confirmed=choice.status == "confirmed")
        return None

    def on_post(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        """Confirm the subscription."""
        loaded = self._load(token)
        if loaded is None:
            return _not_found(resp)
        found, view, choice = loaded
        from swiftmail_web.public.tracking import client_ip

        # The same address as at sign-up: what the trusted proxies saw, not the proxy.
        changed = self_service.confirm(found.tenant_id, found.contact_id, found.list_id,
                                       ip=client_ip(req, self.services) or None,
                                       plugins=self.services.plugins)
        if not changed and choice.status != "confirmed":
            # Regression: after an unsubscribe the old link still said "confirmed".
            html_error(resp, falcon.HTTP_409, "This link is no longer valid",
                       "This subscription was cancelled after the link was sent, so nothing "
                       "was confirmed. To subscribe again, use the sign-up form.",
                       language=view.language, tenant_name=view.tenant_name)
            return None
        self._render(resp, view, choice, token, confirmed=True)
        return None


class SubscribeResource(_Public):
    """``/subscribe/{tenant_slug}/{list_id}``: the public sign-up form."""

    def _list(self, tenant_slug: str, list_id: str):
        try:
            return find_public_list(tenant_slug, list_id)
        except NotFoundError:
            return None

    def _render(self, resp: falcon.Response, target: Any, req: falcon.Request,
                status: str = falcon.HTTP_200, **context: Any) -> None:
        _page(resp, render_page(
            "subscribe.html", language=target.language, tenant_settings=target.tenant_settings,
            tenant_name=target.tenant_name, list_name=target.name,
            list_description=target.description, double_opt_in=target.double_opt_in,
            action=req.path, **context,
        ), status)

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_slug: str,
               list_id: str) -> None:
        """Show the form."""
        target = self._list(tenant_slug, list_id)
        if target is None:
            return _not_found(resp)
        self._render(resp, target, req)
        return None

    def _origin_allowed(self, req: falcon.Request, target: Any) -> bool:
        """Allow same-site posts and those from origins the tenant lists; refuse the rest.

        Browsers send ``Origin`` with every form post; a request without one (a
        browser of old, curl) is not a cross-site browser post. ``null`` (what a page
        with ``Referrer-Policy: no-referrer`` sends) is refused: any website can send it.
        """
        origin = (req.get_header("Origin") or "").rstrip("/").lower()
        if not origin:
            return True
        own = urllib.parse.urlsplit(self.services.settings.public_url)
        # The form's own site: public_url, or the host that served this very page.
        allowed = {f"{own.scheme}://{own.netloc}".lower(), f"{req.scheme}://{req.netloc}".lower()}
        extra = (target.tenant_settings or {}).get("signup_allowed_origins") or []
        if isinstance(extra, list):
            allowed.update(str(o).rstrip("/").lower() for o in extra)
        return origin in allowed

    def _over_limit(self, ip: str) -> int:
        """Count this sign-up; return seconds to wait when over the per-IP limit."""
        window = int(time.time() // 3600)
        key = f"{self.services.config.redis_prefix}signup:{ip}:{window}"
        pipe = self.services.redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, 3600)
        try:
            count = pipe.execute()[0]
        except redis.RedisError as ex:  # the limit fails open: the sign-up still works
            log.warning("signup_limit_unavailable", error=str(ex))
            return 0
        if count > self.services.config.signup_per_ip_per_hour:
            return 3600 - int(time.time()) % 3600
        return 0

    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant_slug: str,
                list_id: str) -> None:
        """Subscribe the address (or quietly ignore a bot that filled the honeypot)."""
        from swiftmail_web.public.tracking import client_ip

        target = self._list(tenant_slug, list_id)
        if target is None:
            return _not_found(resp)
        if not self._origin_allowed(req, target):
            # APPSEC: another website may not sign people up (or back up) through this form.
            html_error(resp, falcon.HTTP_403, "Sign-up not allowed from this website",
                       "Please use the sign-up form on the list owner's own pages.",
                       language=target.language, tenant_name=target.tenant_name)
            return None
        ip = client_ip(req, self.services)
        wait = self._over_limit(ip)
        if wait:
            resp.set_header("Retry-After", str(wait))
            html_error(resp, falcon.HTTP_429, "Too many attempts",
                       "Please try again later.", language=target.language,
                       tenant_name=target.tenant_name)
            return None
        form = read_form(req)
        email = (form.get("email") or [""])[0]
        name = (form.get("name") or [""])[0]
        if (form.get("website") or [""])[0]:
            # NOTE: honeypot filled: a bot. Answer like a success, store nothing.
            log.info("signup_honeypot", tenant_id=str(target.tenant_id))
            self._render(resp, target, req, done=True)
            return None
        try:
            self_service.signup(target, email, name, ip=ip or None,
                                plugins=self.services.plugins,
                                confirm_secret=self.secret,
                                public_url=self.services.settings.public_url)
        except ValidationError as ex:
            message = ex.errors[0]["message"] if getattr(ex, "errors", None) else str(ex)
            self._render(resp, target, req, falcon.HTTP_422, error=message, email=email,
                         name=name)
            return None
        self._render(resp, target, req, done=True)
        return None


class WebViewResource(_Public):
    """``/v/{token}``: the campaign of a sent message, shown in the browser."""

    _composer: Any = None

    def on_get(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        """Render the message as it was sent to this recipient, scripts disabled by CSP."""
        from swiftmail_core.sending.compose import Composer

        try:
            found = tokens.read_view_token(self.secret, token)
        except ValidationError:
            return _not_found(resp)
        if self._composer is None:
            self._composer = Composer(self.services.settings, self.services.plugins)
        # APPSEC: tenant from the verified token; RLS scopes every read. The sending
        # renderer's sandbox, context and limits apply, exactly as when it was sent.
        try:
            with tenant_tx(found.tenant_id):
                rendered = self._composer.sent_html(app_db, found.tenant_id, found.message_id)
        except Exception as ex:  # a limit or a template error: a plain page, never a 500
            log.warning("web_view_render_failed", error=str(ex))
            html_error(resp, falcon.HTTP_200, "This message cannot be shown",
                       "It can no longer be displayed in the browser; the copy in your "
                       "inbox is unchanged.")
            return None
        if rendered is None:
            return _not_found(resp)
        resp.content_type = "text/html; charset=utf-8"
        resp.text = rendered
        resp.cache_control = ["no-store"]
        resp.set_header("Content-Security-Policy", WEB_VIEW_CSP)
        resp.set_header("Referrer-Policy", "no-referrer")
        resp.set_header("X-Robots-Tag", "noindex")
        return None
