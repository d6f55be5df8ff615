"""An API-like host of the cluster test: takes connections from SwiftMail's pool.

Usage: python -m tests.cluster.pool_probe GO_FILE   (settings from the environment)

Takes a connection of the system role from the pool (``db.connect`` with the
multi-host ``database_url``), asks the server its address and prints
``{"ready": true, "server": ADDRESS}``; the connection goes back to the pool
and stays idle. Once GO_FILE exists (the parent cut that server's cable), it
takes a connection from the pool again, as the next API request would, and
prints ``{"server", "seconds", "error"}``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from swiftmail_core import db
from swiftmail_core.db.targets import database_targets
from swiftmail_core.settings import load_settings

QUERY = "SELECT host(inet_server_addr())"


def main(go: Path) -> None:
    """Fill the pool with one idle connection, wait for the cut, then take one again."""
    settings = load_settings()
    db.connect(database_targets(settings), pool_size=2)
    with db.system_tx() as database:
        server = database.execute_sql(QUERY).fetchone()[0]
    print(json.dumps({"ready": True, "server": server}), flush=True)
    while not go.exists():
        time.sleep(0.05)
    started = time.monotonic()
    server, error = None, None
    try:
        with db.system_tx() as database:
            server = database.execute_sql(QUERY).fetchone()[0]
    except Exception as ex:  # the outcome is the data point
        error = f"{type(ex).__name__}: {ex}"[:300]
    print(json.dumps({"server": server, "seconds": round(time.monotonic() - started, 2),
                      "error": error}), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
