"""A relay process for the crash-safety test (killed with SIGKILL at random).

Runs the real engine and the real SubmissionHandler on a trusted loopback
listener; only authentication and the domain check are stand-ins (no
database in this child). Usage: python -m tests.relay.crash_child CONFIG_JSON
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path

from swiftmail_relay.config import RelayConfig
from swiftmail_relay.engine import Relay
from swiftmail_relay.submission import SubmissionHandler, make_smtp_factory

from swiftmail_core.principal import Principal
from swiftmail_core.settings import Settings

TENANT = uuid.UUID("00000000-0000-4000-8000-000000000001")


class AnyKey:
    """Stand-in auth plugin host: every credential is the test tenant."""

    def authenticate(self, credentials):  # type: ignore[no-untyped-def]
        return Principal(tenant_id=TENANT, role="owner")


class AllVerified:
    """Stand-in key store: every domain is verified."""

    def is_verified(self, tenant_id, domain) -> bool:  # type: ignore[no-untyped-def]
        return True

    def domain(self, tenant_id, domain):  # type: ignore[no-untyped-def]
        return None  # no warm-up plan


async def main(options: dict) -> None:  # type: ignore[type-arg]
    settings = Settings(data_dir=Path(options["data_dir"]), dns_nameservers=("127.0.0.1",),
                        dns_port=options["dns_port"])
    config = RelayConfig.from_settings(
        settings, spool_dir=options["spool_dir"], smtp_port=options["smtp_port"],
        allow_networks="127.0.0.0/8", retry_base=0.2, retry_cap=0.5, scan_interval=0.2,
        hostname="crash.relay.test", workers=16)
    relay = Relay(settings, config)
    await relay.start()
    handler = SubmissionHandler(settings, config, AnyKey(), keys=AllVerified(),  # type: ignore[arg-type]
                                notify=relay.notify)
    factory = make_smtp_factory(handler, config, trusted=True, tls_context=None,
                                authenticator=handler.authenticate)
    server = await asyncio.get_running_loop().create_server(
        factory, "127.0.0.1", options["listen_port"], reuse_address=True)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
