"""Every hook a SwiftMail plugin can implement, and nothing else.

Built-in behaviour (API-key auth, local storage, the relay, SMTP, SendGrid
and Mailgun transports) implements these same hooks. Each hook is documented
with a heading in ``docs/plugins.md``; a test fails when one is missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click
    import falcon

    from swiftmail_core.db.audit import Finding
    from swiftmail_core.plugins import PluginManager
    from swiftmail_core.principal import Credentials, Principal
    from swiftmail_core.settings import Settings
    from swiftmail_core.storage import Storage
    from swiftmail_core.tracking import TrackingEvent
    from swiftmail_core.transports import Transport

hookspec = pluggy.HookspecMarker("swiftmail")
hookimpl = pluggy.HookimplMarker("swiftmail")


@hookspec
def swiftmail_startup(settings: Settings, process: str) -> None:
    """Run once in every SwiftMail process as it starts, after plugins load.

    Every process calls it through ``runtime.start``: each gunicorn or
    uvicorn worker of the API and public apps, the sending worker, the
    relay, the tracking drainer, the webhook deliverer, every child of
    ``swiftmail up`` and any other command that connects. An exception stops
    the process.

    :param settings: the effective settings.
    :param process: what the process is: ``api``, ``public``,
        ``public-asgi``, ``worker``, ``relay``, ``tracking-drainer``,
        ``webhook-deliverer``, ``up``, ``cli``, ``test`` or ``bench``
        (``swiftmail_core.runtime.ProcessKind``); take it only if needed.
    :returns: nothing. Not firstresult: every implementation runs.
    """


@hookspec
def swiftmail_register_transports(settings: Settings) -> Sequence[Transport]:
    """Return the sending transports this plugin provides.

    Each transport has a unique ``name`` (what a campaign's ``transport``
    field selects) and ``send(messages)`` returning one ``SendResult`` per
    message: accepted, deferred with a retry time, or rejected with a reason.

    :param settings: the effective settings (plugin options via
        ``settings.plugin_settings(name)``).
    :returns: a list of transports. Not firstresult: lists are merged; two
        transports with one name are an error at start-up.
    """
    return []


@hookspec(firstresult=True)
def swiftmail_authenticate(credentials: Credentials, settings: Settings) -> Principal | None:
    """Turn presented credentials into a principal (tenant, role, scopes).

    :param credentials: the Authorization header, SMTP AUTH user and
        password, remote address and headers.
    :param settings: the effective settings.
    :returns: a ``Principal``, or None when this plugin does not recognise
        the credentials. firstresult: the first principal wins. Raise
        ``AuthenticationError`` for credentials this plugin owns but refuses
        (revoked, expired).
    """


@hookspec
def swiftmail_tracking_event(event: TrackingEvent, settings: Settings) -> None:
    """Receive every stored delivery, bounce, open, click, complaint, unsubscribe.

    Called through pluggy after the event row is committed: implementations
    run in pluggy's order (last registered first, ``tryfirst``/``trylast``
    honoured), wrappers (``wrapper=True`` or ``hookwrapper=True``) around
    them, and each takes only the arguments it names. Must be quick and
    should not raise: an exception ends this event's fan-out as in any
    pluggy hook (wrappers see it, later implementations do not run) and the
    host logs it; the stored event stands and is not offered again.

    :param event: the event.
    :param settings: the effective settings; take it only if needed.
    :returns: nothing. Not firstresult: every implementation runs.
    """


@hookspec
def swiftmail_secret_settings(settings: Settings) -> Mapping[str, Sequence[str]]:
    """Name the plugin settings that hold secrets, for redaction.

    ``swiftmail config show`` hides these values, as it hides any setting
    named like a key, secret, password, token or credential.

    :param settings: the effective settings.
    :returns: a mapping of plugin settings table (the ``NAME`` of
        ``[plugins.NAME]``) to the names of its secret settings. Not
        firstresult: every plugin's names are merged.
    """
    return {}


@hookspec(firstresult=True)
def swiftmail_storage(settings: Settings) -> Storage | None:
    """Return the storage backend for imports, exports and attachments.

    :param settings: the effective settings.
    :returns: a ``Storage``, or None to let another plugin answer.
        firstresult: the first backend wins; the built-in local filesystem
        storage is registered last so any other plugin takes precedence.
    """


@hookspec
def swiftmail_compose_message(
    message: EmailMessage, context: dict[str, Any]
) -> None:
    """Add or change headers of a message before it is signed and sent.

    :param message: the message being composed; change it in place.
    :param context: plain data: ``tenant_id``, ``campaign_id``, ``ledger_id``,
        ``recipient``, ``transport``.
    :returns: nothing. Not firstresult: every implementation runs in order.
    """


@hookspec
def swiftmail_register_commands(cli: click.Group) -> None:
    """Add commands to the ``swiftmail`` CLI.

    :param cli: the root click group; call ``cli.add_command(...)``.
    :returns: nothing. Not firstresult.
    """


@hookspec
def swiftmail_register_routes(
    app: falcon.App, settings: Settings, plugin_manager: PluginManager
) -> None:
    """Add routes to the web application.

    Routes under ``/v1`` must follow the API conventions (problem+json
    errors, tenant from the credential, ``tenant_tx`` around tenant data).

    :param app: the Falcon application being built by ``create_app``.
    :param settings: the effective settings.
    :param plugin_manager: the app's plugin manager (for resources that report
        through hooks, such as provider webhooks); take it only if needed.
    :returns: nothing. Not firstresult.
    """


@hookspec
def swiftmail_doctor_checks(settings: Settings) -> Sequence[Finding]:
    """Return what ``swiftmail doctor`` should report about this plugin's setup.

    Check configuration an operator can get wrong (a setting that would
    strand mail or publish unusable DNS records); never raise for a failed
    check, return a failing ``Finding`` whose detail says what to set.

    :param settings: the effective settings.
    :returns: findings (``swiftmail_core.db.audit.Finding``). Not firstresult:
        every implementation's findings are reported.
    """
    return []
