"""An example SwiftMail plugin, installed and loaded by the test suite.

It shows three hooks: a transport that accepts everything into memory, a
tracking sink that counts events, and a CLI command.
"""

from __future__ import annotations

from collections import Counter

import click

from swiftmail_core.hookspecs import hookimpl
from swiftmail_core.transports import Outcome, SendResult

EVENT_COUNTS: Counter[str] = Counter()


class MemoryTransport:
    """A transport that keeps every message in a list (for demos and tests)."""

    name = "example-memory"

    def __init__(self) -> None:
        self.sent = []

    def send(self, messages):
        """Accept every message."""
        self.sent.extend(messages)
        return [SendResult(m.ledger_id, Outcome.ACCEPTED, f"mem-{m.ledger_id}") for m in messages]

    def close(self):
        """Nothing to release."""


@hookimpl
def swiftmail_register_transports(settings):
    """Provide the in-memory transport."""
    return [MemoryTransport()]


@hookimpl
def swiftmail_tracking_event(event):
    """Count events by type."""
    EVENT_COUNTS[event.type] += 1


@click.command("example-hello")
@click.option("--name", default="world", envvar="SWIFTMAIL_EXAMPLE_NAME", help="Who to greet.")
def hello(name):
    """Greet NAME (an example plugin command).

    \b
    Example:
      swiftmail example-hello --name Ada
    """
    click.echo(f"hello, {name}")


@hookimpl
def swiftmail_register_commands(cli):
    """Add `swiftmail example-hello`."""
    cli.add_command(hello)
