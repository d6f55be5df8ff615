"""A platform intake process for the kill test: ``python -m tests.relay.intake_child CONFIG_JSON``.

With ``die_after_commit`` it SIGKILLs itself right after a batch was renamed
into ``queue/`` and before its ledger record was written or any answer sent:
the worst moment for a worker that will send the batch again.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from swiftmail_relay.config import RelayConfig
from swiftmail_relay.platform_intake import serve_intake
from swiftmail_relay.spool import Spool

from swiftmail_core.settings import Settings


async def main(options: dict) -> None:  # type: ignore[type-arg]
    settings = Settings(data_dir=Path(options["data_dir"]), secret_key=options["secret_key"])
    config = RelayConfig.from_settings(settings, spool_dir=options["spool_dir"])
    if options.get("die_after_commit"):
        committed = Spool.commit

        def commit_then_die(self, staged):  # type: ignore[no-untyped-def]
            committed(self, staged)
            os.kill(os.getpid(), signal.SIGKILL)

        Spool.commit = commit_then_die  # type: ignore[method-assign]
    await serve_intake(settings, config, listen=("127.0.0.1", options["port"]))
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
