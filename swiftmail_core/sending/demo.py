"""A demonstration campaign, end to end, on this machine only.

``run_demo_campaign(runtime)`` imports a small sample list (through the
real CSV import), gives the demo tenant a verified sending domain with a
DKIM key, starts a local SMTP sink standing in for the internet (loopback
only) and SwiftMail's relay in a thread, sends a personalised campaign
through the worker path (schedule, tick, claim with a lease, render, the
``relay`` transport's durable spool hand-off, DKIM signing, ledger) and
reports what the sink received once the relay recorded every delivery.
``swiftmail demo`` calls it with a progress bar.

NOTE: the relay runs with ``relayhost = 127.0.0.1`` and the sink's port
(the demo has no MX records), ``allow_networks = 127.0.0.0/8`` and warm-up
off, on its own spool under ``<data_dir>/demo/``; all of it demo only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swiftmail_core import tenants
from swiftmail_core.db import tenant_tx
from swiftmail_core.errors import ConfigurationError, NotFoundError, ServiceUnavailableError
from swiftmail_core.plugins import PluginManager
from swiftmail_core.sending import lifecycle, sweeper
from swiftmail_core.sending.worker import SendingWorker

FIRST_NAMES = ("Ada", "Grace", "Linus", "Margaret", "Alan", "Barbara", "Ken", "Radia",
               "Dennis", "Frances")
DEMO_DOMAIN = "demo.swiftmail.example"
CITIES = ("Paris", "Oslo", "Lima", "Kyoto", "Accra", "Quito", "Perth", "Riga")
DEMO_HTML = """<html><body>
<h1>Hello {{ contact.first_name }}!</h1>
<p>The SwiftMail meetup comes to {{ contact.city }} next month.</p>
<p><a href="https://swiftmail.example/meetups">See the programme</a></p>
</body></html>"""


@dataclasses.dataclass(frozen=True)
class DemoReport:
    """What the demo campaign did."""

    tenant_id: uuid.UUID
    campaign_id: uuid.UUID
    recipients: int
    delivered: int
    ledger: dict[str, int]
    seconds: float
    sample_subject: str
    sink: str
    transport: str = "relay"
    dkim_signed: int = 0


class _Sink:
    """A counting SMTP sink on 127.0.0.1 (aiosmtpd)."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.lock = threading.Lock()
        self.messages: list[bytes] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                with sink.lock:
                    sink.messages.extend([envelope.content] * len(envelope.rcpt_tos))
                return "250 2.0.0 accepted by the demo sink"

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def start(self) -> int:
        self.controller.start()
        return self.port

    def stop(self) -> None:
        self.controller.stop()

    def count(self) -> int:
        with self.lock:
            return len(self.messages)

    def dkim_signed(self) -> int:
        """Count received messages whose header block has a DKIM-Signature."""
        with self.lock:
            messages = list(self.messages)
        signed = 0
        for raw in messages:
            header = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
            if any(line.lower().startswith(b"dkim-signature:") for line in header.split(b"\n")):
                signed += 1
        return signed


class _RelayThread:
    """SwiftMail's relay engine in its own thread and event loop."""

    def __init__(self, runtime: Any, settings: Any, config: Any, plugins: PluginManager) -> None:
        self.runtime = runtime
        self.settings = settings
        self.config = config
        self.plugins = plugins
        self.lock = threading.Lock()
        self.finished = 0
        self.relay: Any = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="demo-relay",
                                       daemon=True)

    def _final(self, envelope: Any) -> None:
        with self.lock:
            self.finished += 1

    async def _start(self) -> None:
        from swiftmail_relay.engine import Relay
        from swiftmail_relay.outcomes import record_outcomes
        from swiftmail_relay.shaping import RedisShaper
        from swiftmail_relay.sink import OutcomeSink

        from swiftmail_core import redis_clients

        self.relay = Relay(
            self.settings, self.config,
            throttle=RedisShaper(self.config, redis_clients.async_client(self.settings)),
            sink=OutcomeSink(functools.partial(record_outcomes, plugins=self.plugins)),
            on_final=self._final,
        )
        await self.relay.start()

    def start(self) -> None:
        """Start the loop thread and the relay; raise if the relay cannot start."""
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)

    def done(self) -> int:
        """Return how many messages reached a final state (outcomes stored)."""
        with self.lock:
            return self.finished

    def stop(self) -> None:
        """Stop the relay (its spool keeps anything unfinished) and the thread."""
        try:
            if self.relay is not None:
                asyncio.run_coroutine_threadsafe(self.relay.stop(), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            if not self.thread.is_alive():
                self.loop.close()


def _sample_csv(path: Path, size: int) -> None:
    lines = ["email,name,first_name,city"]
    for index in range(size):
        first = FIRST_NAMES[index % len(FIRST_NAMES)]
        lines.append(f"{first.lower()}.{index}@demo-readers.example,{first} Reader {index},"
                     f"{first},{CITIES[index % len(CITIES)]}")
    path.write_text("\n".join(lines) + "\n")


def _demo_tenant(slug: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(tenants.get_tenant(slug).id))
    except NotFoundError:
        return uuid.UUID(str(tenants.create_tenant(slug, "Demo Tenant").id))


def _demo_domain(settings: Any, tenant_id: uuid.UUID) -> None:
    """Give the demo tenant a verified sending domain with a DKIM key (once)."""
    from swiftmail_core import crypto
    from swiftmail_core.dkim_keys import generate_dkim_key
    from swiftmail_core.models import SendingDomain, utcnow

    secret_key = settings.require("secret_key")
    now = utcnow()
    with tenant_tx(tenant_id):
        row = SendingDomain.select().where(SendingDomain.domain == DEMO_DOMAIN).first()
        if row is not None:
            if row.verified_at is None:
                SendingDomain.update(verified_at=now, updated_at=now).where(
                    SendingDomain.id == row.id).execute()
            return
        pem, public = generate_dkim_key()
        SendingDomain.insert(
            tenant_id=tenant_id, id=uuid.uuid4(), domain=DEMO_DOMAIN,
            dkim_selector=f"sm{now:%Y%m}",
            # APPSEC: the private key exists in clear only in this process's memory.
            dkim_private_key_encrypted=crypto.encrypt(secret_key, pem),
            dkim_public_key=public, return_path_domain=f"bounces.{DEMO_DOMAIN}",
            # NOTE: marked verified without DNS checks: the demo domain is not real.
            verified_at=now, created_at=now, updated_at=now).execute()


def _demo_settings(runtime: Any, spool_dir: Path, port: int) -> tuple[Any, dict[str, Any]]:
    """Return settings whose relay spools to ``spool_dir`` and delivers to the sink."""
    relay_options = {
        "spool_dir": str(spool_dir), "relayhost": "127.0.0.1", "smtp_port": port,
        "allow_networks": "127.0.0.0/8", "warmup": False, "submission_listen": None,
        "bounce_listen": None, "metrics_listen": None, "scan_interval": 0.2,
        "retry_base": 1.0, "retry_cap": 5.0, "connect_timeout": 5.0,
        "redis_prefix": f"swiftmail:demo:{spool_dir.name}",
    }
    plugins = dict(runtime.settings.plugins)
    plugins["relay"] = {**plugins.get("relay", {}), **relay_options}
    plugins["relay_transport"] = {"mode": "handoff"}
    settings = dataclasses.replace(runtime.settings, send_retry_base_seconds=1, plugins=plugins)
    return settings, relay_options


def run_demo_campaign(
    runtime: Any,
    *,
    recipients: int = 200,
    tenant_slug: str = "demo",
    progress: Callable[[int, int], None] | None = None,
    timeout: float = 300.0,
) -> DemoReport:
    """Import a sample list, send a signed campaign through the relay to a sink, report.

    ``progress(delivered, total)`` is called as messages reach the sink.
    """
    from swiftmail_relay.config import RelayConfig

    from swiftmail_core.imports.service import import_file

    started = time.perf_counter()
    tenant_id = _demo_tenant(tenant_slug)
    _demo_domain(runtime.settings, tenant_id)
    list_id = uuid.uuid4()
    with tenant_tx(tenant_id) as database:
        database.execute_sql(
            "INSERT INTO lists (tenant_id, id, name) VALUES (%s, %s, %s)",
            (str(tenant_id), str(list_id),
             f"Demo readers {time.strftime('%Y-%m-%d %H:%M:%S')} {list_id.hex[:6]}"))
    with tempfile.TemporaryDirectory(prefix="swiftmail-demo-") as directory:
        path = Path(directory) / "readers.csv"
        _sample_csv(path, recipients)
        import_file(runtime, tenant_id, "import_contacts", path, {"list": str(list_id)})
    campaign_id = uuid.uuid4()
    spool_dir = Path(runtime.settings.data_dir) / "demo" / f"spool-{campaign_id.hex[:12]}"
    sink = _Sink()
    port = sink.start()
    relay: _RelayThread | None = None
    try:
        settings, relay_options = _demo_settings(runtime, spool_dir, port)
        config = RelayConfig.from_settings(settings, **relay_options)
        if RelayConfig.from_settings(settings).spool_dir != config.spool_dir:
            # The hand-off reads [plugins.relay] with the environment on top.
            raise ConfigurationError(
                "the demo needs its own relay spool: unset SWIFTMAIL_PLUGIN_RELAY_SPOOL_DIR "
                "for `swiftmail demo`")
        plugins = PluginManager.load(settings)
        relay = _RelayThread(runtime, settings, config, plugins)
        relay.start()
        with tenant_tx(tenant_id) as database:
            database.execute_sql(
                "INSERT INTO campaigns (tenant_id, id, name, subject, html, from_email, from_name, "
                "transport, list_ids) VALUES (%s, %s, 'Demo campaign', "
                "'{{ contact.first_name }}, a meetup in {{ contact.city }}', %s, %s, "
                "'SwiftMail Demo', 'relay', %s::uuid[])",
                (str(tenant_id), str(campaign_id), DEMO_HTML, f"hello@{DEMO_DOMAIN}",
                 [str(list_id)]))
        lifecycle.schedule_campaign(tenant_id, campaign_id)
        worker = SendingWorker(settings, plugins)
        sweeper.tick(settings, plugins)
        with tenant_tx(tenant_id) as database:
            total = int(database.execute_sql(
                "SELECT recipient_count FROM campaigns WHERE id = %s",
                (str(campaign_id),)).fetchone()[0])
        deadline = time.monotonic() + timeout
        status = "sending"
        # Sent (every message durably in the relay's spool), then delivered by the relay.
        while status != "sent" or relay.done() < total:
            if time.monotonic() > deadline:
                raise ServiceUnavailableError(
                    f"the demo campaign did not finish in {timeout:.0f}s "
                    f"({sink.count()} of {total} delivered): see `swiftmail send status "
                    f"{tenant_slug} {campaign_id}` and the relay spool {spool_dir}")
            if status != "sent":
                if not worker.process_batch():
                    time.sleep(0.2)
                    sweeper.tick(settings, plugins)
                with tenant_tx(tenant_id) as database:
                    status = database.execute_sql(
                        "SELECT status FROM campaigns WHERE id = %s",
                        (str(campaign_id),)).fetchone()[0]
            else:
                time.sleep(0.1)
            if progress is not None:
                progress(sink.count(), total)
        if progress is not None:
            progress(sink.count(), total)
        relay.stop()
        relay = None
        with tenant_tx(tenant_id) as database:
            ledger = dict(database.execute_sql(
                "SELECT status, count(*) FROM messages WHERE campaign_id = %s GROUP BY status",
                (str(campaign_id),)).fetchall())
        subject = ""
        if sink.messages:
            from email import message_from_bytes, policy

            subject = str(message_from_bytes(sink.messages[0], policy=policy.default)["Subject"])
        shutil.rmtree(spool_dir, ignore_errors=True)  # every message is final
        return DemoReport(tenant_id, campaign_id, total, sink.count(),
                          {k: int(v) for k, v in ledger.items()},
                          round(time.perf_counter() - started, 2), subject, f"127.0.0.1:{port}",
                          transport="relay", dkim_signed=sink.dkim_signed())
    finally:
        try:
            if relay is not None:
                relay.stop()
        finally:
            sink.stop()
