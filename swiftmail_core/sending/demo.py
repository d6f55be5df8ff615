"""A demonstration campaign, end to end, on this machine only.

``run_demo_campaign(runtime)`` imports a small sample list (through the
real CSV import), starts a local SMTP sink standing in for the internet
(loopback only), sends a personalised campaign through the worker path
(schedule, tick, claim with a lease, render, transport, ledger) and reports
what the sink received. ``swiftmail demo`` calls it with a progress bar.

NOTE: mail goes through the ``smtp`` transport plugin pointed at the sink,
not through the relay: relay delivery needs MX records, which a loopback
demo does not have.
"""

from __future__ import annotations

import dataclasses
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
from swiftmail_core.errors import NotFoundError, ServiceUnavailableError
from swiftmail_core.plugins import PluginManager
from swiftmail_core.sending import lifecycle, sweeper
from swiftmail_core.sending.worker import SendingWorker

FIRST_NAMES = ("Ada", "Grace", "Linus", "Margaret", "Alan", "Barbara", "Ken", "Radia",
               "Dennis", "Frances")
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


def run_demo_campaign(
    runtime: Any,
    *,
    recipients: int = 200,
    tenant_slug: str = "demo",
    progress: Callable[[int, int], None] | None = None,
    timeout: float = 300.0,
) -> DemoReport:
    """Import a sample list, send a personalised campaign to a local sink, report.

    ``progress(delivered, total)`` is called as messages reach the sink.
    """
    from swiftmail_core.imports.service import import_file

    started = time.perf_counter()
    tenant_id = _demo_tenant(tenant_slug)
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
    sink = _Sink()
    port = sink.start()
    try:
        settings = dataclasses.replace(
            runtime.settings, send_retry_base_seconds=1,
            plugins={**runtime.settings.plugins, "smtp": {"host": "127.0.0.1", "port": port}})
        plugins = PluginManager.load(settings)
        campaign_id = uuid.uuid4()
        with tenant_tx(tenant_id) as database:
            database.execute_sql(
                "INSERT INTO campaigns (tenant_id, id, name, subject, html, from_email, from_name, "
                "transport, list_ids) VALUES (%s, %s, 'Demo campaign', "
                "'{{ contact.first_name }}, a meetup in {{ contact.city }}', %s, "
                "'hello@demo.swiftmail.example', 'SwiftMail Demo', 'smtp', %s::uuid[])",
                (str(tenant_id), str(campaign_id), DEMO_HTML, [str(list_id)]))
        lifecycle.schedule_campaign(tenant_id, campaign_id)
        worker = SendingWorker(settings, plugins)
        sweeper.tick(settings, plugins)
        with tenant_tx(tenant_id) as database:
            total = int(database.execute_sql(
                "SELECT recipient_count FROM campaigns WHERE id = %s",
                (str(campaign_id),)).fetchone()[0])
        deadline = time.monotonic() + timeout
        status = "sending"
        while status != "sent":
            if time.monotonic() > deadline:
                raise ServiceUnavailableError(
                    f"the demo campaign did not finish in {timeout:.0f}s: see `swiftmail send "
                    f"status {tenant_slug} {campaign_id}`")
            if not worker.process_batch():
                time.sleep(0.2)
                sweeper.tick(settings, plugins)
            if progress is not None:
                progress(sink.count(), total)
            with tenant_tx(tenant_id) as database:
                status = database.execute_sql(
                    "SELECT status FROM campaigns WHERE id = %s", (str(campaign_id),)).fetchone()[0]
        with tenant_tx(tenant_id) as database:
            ledger = dict(database.execute_sql(
                "SELECT status, count(*) FROM messages WHERE campaign_id = %s GROUP BY status",
                (str(campaign_id),)).fetchall())
        subject = ""
        if sink.messages:
            from email import message_from_bytes, policy

            subject = str(message_from_bytes(sink.messages[0], policy=policy.default)["Subject"])
        return DemoReport(tenant_id, campaign_id, total, sink.count(),
                          {k: int(v) for k, v in ledger.items()},
                          round(time.perf_counter() - started, 2), subject, f"127.0.0.1:{port}")
    finally:
        sink.stop()
