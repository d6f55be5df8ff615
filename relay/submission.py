"""The submission listener: authenticated tenants' mail into the spool.

APPSEC: this relay is never an open relay. MAIL, RCPT and DATA need a
successful AUTH (530 otherwise); AUTH PLAIN/LOGIN is offered only after
STARTTLS, except on a listener the operator names in ``trusted_listeners``
(loopback, for the platform itself). The credential (an ``sm_live_`` API key
as the password, or any credential an auth plugin accepts) resolves to a
principal whose tenant is fixed for the session. The envelope sender must be
in one of that tenant's verified sending domains (or be its own VERP
address, or null), so a later DSN never goes to a third party; every author
domain of the message (each From mailbox and Sender) must be one too.
Replies 250 to DATA only after the spool holds the message durably;
451/452 otherwise. What the message must look like and what the relay adds
to it (``Received:``, ``Date:``, ``Message-ID:``; ``Bcc:`` removed) is
``swiftmail_relay.message_checks``.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import re
import ssl
import threading
import uuid
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cachetools import TTLCache
from swiftmail_relay import metrics, verp
from swiftmail_relay.auth_failures import AuthFailures
from swiftmail_relay.config import RelayConfig
from swiftmail_relay.handoff import sign_for_tenant
from swiftmail_relay.keys import KeyStore
from swiftmail_relay.listener_errors import TransientOnError
from swiftmail_relay.message_checks import (
    check_submission,
    complete_headers,
    header_problem,
    received_header,
)
from swiftmail_relay.server_tls import ServerTls, server_tls
from swiftmail_relay.smtp_server import RelaySMTP
from swiftmail_relay.spool import Envelope as SpoolEnvelope
from swiftmail_relay.spool import Recipient, Spool, SpoolError, new_id

from swiftmail_core.errors import (
    AuthenticationError,
    PermissionDeniedError,
    SwiftMailError,
    ValidationError,
)
from swiftmail_core.plugins import PluginManager
from swiftmail_core.principal import Credentials, Principal
from swiftmail_core.settings import Settings

__all__ = ["SubmissionHandler", "header_problem", "make_smtp_factory", "serve_submission",
           "tls_context"]

log = structlog.get_logger("swiftmail.relay.submission")
SEND_SCOPE = "messages:write"
MAX_RECIPIENTS = 1000
AUTH_CACHE_SECONDS = 60.0
AUTH_CACHE_ENTRIES = 10_000
LOOKUP_THREADS = 8
TEMPORARY_AUTH_FAILURE = "454 4.7.0 Temporary authentication failure, try again later"
_ADDRESS = re.compile(r"^[^\s@<>()\[\],;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def _body_type(mail_options: list[str]) -> str:
    """Return the BODY= value a client declared on MAIL (``8BITMIME``), upper case."""
    for option in mail_options:
        name, _, value = option.partition("=")
        if name.upper() == "BODY":
            return value.upper()
    return ""


class SubmissionHandler(TransientOnError):
    """aiosmtpd handler: authenticate, check, sign, spool."""

    def __init__(
        self,
        settings: Settings,
        config: RelayConfig,
        plugins: PluginManager,
        *,
        spool: Spool | None = None,
        keys: KeyStore | None = None,
        notify: Callable[[Sequence[str]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.plugins = plugins
        self.spool = spool or Spool(config.spool_dir)
        self.keys = keys or KeyStore(settings.secret_key or "", ed25519=config.dkim_ed25519)
        self.notify = notify
        # Only successful lookups are cached: a key created a moment ago works at once.
        self._auth_cache: TTLCache[bytes, Principal] = TTLCache(AUTH_CACHE_ENTRIES,
                                                                AUTH_CACHE_SECONDS)
        self._auth_lock = threading.Lock()
        # Database lookups (AUTH, sending domains) get their own threads: a
        # stalled database then holds these, never the threads the spool
        # writes and deliveries use.
        self.lookups = ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="relay-lookup")

    async def _lookup(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.lookups, function, *args)

    # Authentication ---------------------------------------------------------

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope,
                     mechanism: str, auth_data: Any) -> AuthResult:
        """Resolve SMTP AUTH credentials to a principal through the plugins.

        Blocking (a database lookup): the listener calls it in a worker thread.
        """
        if mechanism not in ("PLAIN", "LOGIN") or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        username = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        fingerprint = hashlib.sha256(auth_data.login + b"\0" + auth_data.password).digest()
        with self._auth_lock:
            principal = self._auth_cache.get(fingerprint)
        if principal is None:
            try:
                principal = self.plugins.authenticate(Credentials(
                    username=username, password=password, remote_addr=(session.peer or ("",))[0]))
            except (AuthenticationError, PermissionDeniedError, ValidationError):
                principal = None
            except SwiftMailError as ex:
                log.warning("smtp_auth_unavailable", error=str(ex))
                return AuthResult(success=False, handled=False, message=TEMPORARY_AUTH_FAILURE)
            if principal is not None:
                with self._auth_lock:
                    self._auth_cache[fingerprint] = principal
        # APPSEC: the principal must be allowed to send; its tenant is now fixed.
        if principal is None or not principal.can("editor", SEND_SCOPE):
            log.info("smtp_auth_failed", username=username, peer=str(session.peer))
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=principal)

    # SMTP verbs -------------------------------------------------------------

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        """Accept a reverse path of the tenant's own from an authenticated session."""
        principal = session.auth_data
        if not session.authenticated or not isinstance(principal, Principal):
            return "530 5.7.0 Authentication required"
        if address and not _ADDRESS.match(address):
            return "553 5.1.7 Bad sender address syntax"
        if address and not await self._own_reverse_path(principal, address):
            # APPSEC: a DSN goes to the reverse path; a third party's address
            # there would turn this relay into a backscatter source.
            return (f"553 5.7.1 Sender address {address} is not in a verified sending "
                    "domain of this account")
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def _own_reverse_path(self, principal: Principal, address: str) -> bool:
        """Return True for the tenant's own VERP address or one in its verified domains."""
        if self.settings.secret_key:
            owner = verp.decode(self.settings.secret_key, address)
            if owner is not None:
                return str(owner[0]) == str(principal.tenant_id)
        domain = address.rpartition("@")[2].lower()
        return await self._lookup(self.keys.is_verified, principal.tenant_id, domain)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        """Accept recipients for an authenticated tenant (relaying is its right)."""
        if not session.authenticated:
            # APPSEC: never relay for an unauthenticated client.
            return "530 5.7.0 Authentication required"
        if not _ADDRESS.match(address):
            return "553 5.1.3 Bad recipient address syntax"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Check the message and its author domains, complete, sign, spool, then 250."""
        principal = session.auth_data
        if not session.authenticated or not isinstance(principal, Principal):
            return "530 5.7.0 Authentication required"
        raw = envelope.original_content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        checked = await asyncio.to_thread(check_submission, raw)
        if checked.refusal:
            return checked.refusal
        domains = checked.author_domains
        tenant_id = principal.tenant_id
        unverified = await self._lookup(
            lambda: [d for d in domains if not self.keys.is_verified(tenant_id, d)])
        if unverified:
            # APPSEC: a tenant sends only from its own verified domains.
            return (f"550 5.7.1 Sender domain {unverified[0]} is not a verified sending domain "
                    "of this account")
        domain = domains[0]
        spooled = SpoolEnvelope(
            id=new_id(), mail_from=envelope.mail_from or "",
            recipients=[Recipient(address) for address in envelope.rcpt_tos],
            tenant_id=str(tenant_id), source="submission", sender_domain=domain,
            smtputf8=bool(envelope.smtp_utf8), body_type=_body_type(envelope.mail_options),
        )
        trace = received_header(
            helo=session.host_name, peer_ip=str((session.peer or ("unknown",))[0]),
            hostname=self.config.hostname, protocol=_protocol(session, envelope),
            queue_id=spooled.id, recipients=envelope.rcpt_tos)
        row = await self._lookup(self.keys.domain, tenant_id, domain)
        if row is not None and row.warmup_plan:
            spooled.warmup_plan = dict(row.warmup_plan)
        if row is not None and row.return_path_domain:
            # Bounces then come back on the From domain's own return path (SPF aligned).
            spooled.return_path_domain = row.return_path_domain
        try:
            signed = await asyncio.to_thread(lambda: sign_for_tenant(
                self.settings, self.config,
                complete_headers(checked.raw, trace=trace, message_id_domain=domain), tenant_id))
            queue_id = await asyncio.to_thread(self.spool.write, spooled, signed)
        except SpoolError as ex:
            log.error("spool_write_failed", error=str(ex))
            return ex.smtp_reply
        except SwiftMailError as ex:
            log.error("submission_failed", error=str(ex))
            return "451 4.3.0 Local error in processing, try again later"
        # Spooled: from here on the answer is 250 whatever happens (a 4xx would make the
        # client send the message again).
        try:
            metrics.ACCEPTED.labels(source="submission").inc()
            if self.notify is not None:
                self.notify([queue_id])
        except Exception:
            log.exception("submission_wake_up_failed", queue_id=queue_id)  # the scan finds it
        return f"250 2.0.0 OK queued as {queue_id}"


def _protocol(session: Session, envelope: Envelope) -> str:
    """Return the ``with`` keyword of the trace field (RFC 3848, RFC 6531)."""
    base = "UTF8SMTP" if envelope.smtp_utf8 else "ESMTP"
    return base + ("S" if session.ssl is not None else "") + "A"


#: Every AUTH mechanism a relay session could offer (aiosmtpd's ``auth_*`` methods).
AUTH_MECHANISMS: tuple[str, ...] = tuple(sorted(
    getattr(method, "__auth_mechanism_name__", name.removeprefix("auth_").replace("__", "-"))
    for name, method in inspect.getmembers(RelaySMTP) if name.startswith("auth_")))


def make_smtp_factory(
    handler: Any,
    config: RelayConfig,
    *,
    trusted: bool,
    tls_context: ssl.SSLContext | None,
    authenticator: Any = None,
    auth_failures: AuthFailures | None = None,
) -> Callable[[], SMTP]:
    """Return a protocol factory for ``loop.create_server``.

    Every session of the listener shares one ``AuthFailures`` count.
    """
    failures = auth_failures or AuthFailures()

    def factory() -> SMTP:
        with warnings.catch_warnings():
            # NOTE: AUTH without TLS is deliberate on an operator-named trusted
            # (loopback) listener; aiosmtpd warns about it on every connection.
            warnings.simplefilter("ignore", UserWarning)
            return _smtp()

    def _smtp() -> SMTP:
        return RelaySMTP(
            handler,
            auth_failures=failures,
            auth_executor=getattr(handler, "lookups", None),
            hostname=config.hostname,
            data_size_limit=config.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            tls_context=tls_context,
            require_starttls=bool(tls_context) and not trusted,
            auth_required=authenticator is not None,
            auth_require_tls=not trusted,
            # A listener without an authenticator (the bounce MX on 25) offers no AUTH.
            auth_exclude_mechanism=None if authenticator is not None else AUTH_MECHANISMS,
            authenticator=authenticator,
            ident="SwiftMail",
        )

    return factory


def tls_context(config: RelayConfig) -> ssl.SSLContext | None:
    """Return a server TLS context when a certificate is configured (not reloaded)."""
    tls = server_tls(config.tls_cert, config.tls_key)
    return tls.context if tls else None


async def serve_submission(
    settings: Settings,
    config: RelayConfig,
    plugins: PluginManager,
    *,
    notify: Callable[[Sequence[str]], None] | None = None,
    listen: tuple[str, int] | None = None,
    tls: ServerTls | None = None,
    auth_failures: AuthFailures | None = None,
) -> asyncio.base_events.Server:
    """Start the submission listener in the running loop (SO_REUSEPORT).

    ``tls`` is the relay's reloadable certificate (one is loaded from the
    config when not given); ``auth_failures`` the failed-AUTH count (the
    relay's is shared through Redis; a process-local one when not given).
    """
    host, port = listen or config.submission_listen
    trusted = f"{host}:{port}" in config.trusted_listeners
    handler = SubmissionHandler(settings, config, plugins, notify=notify)
    tls = tls or server_tls(config.tls_cert, config.tls_key)
    factory = make_smtp_factory(handler, config, trusted=trusted,
                                tls_context=tls.context if tls else None,
                                authenticator=handler.authenticate,
                                auth_failures=auth_failures)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, host, port, reuse_port=True)
    log.info("submission_listening", host=host, port=port, trusted=trusted,
             tls=bool(config.tls_cert), instance=uuid.uuid4().hex[:6])
    return server
