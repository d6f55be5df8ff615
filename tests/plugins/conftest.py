"""Fixtures for transport plugin tests: provider stand-ins on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.plugins.standins.mailgun import MailgunStandin
from tests.plugins.standins.sendgrid import SendGridStandin


@pytest.fixture
def sendgrid_standin() -> Iterator[SendGridStandin]:
    """A running SendGrid stand-in."""
    with SendGridStandin() as server:
        yield server  # type: ignore[misc]


@pytest.fixture
def mailgun_standin() -> Iterator[MailgunStandin]:
    """A running Mailgun stand-in."""
    with MailgunStandin() as server:
        yield server  # type: ignore[misc]
