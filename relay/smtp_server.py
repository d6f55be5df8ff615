"""aiosmtpd's SMTP server with what the relay's listeners add on top.

* AUTH credentials are checked off the event loop (a database lookup that
  may wait on the pool must not stall every other session and delivery),
  and failed AUTH is answered after a growing delay and, past a limit per
  source address, with ``421`` and a disconnect (``auth_failures``).
* DATA accepts lines longer than 1,000 octets while the data is read, so a
  message with LF-only line endings (one long "line" to aiosmtpd, which
  reads up to CRLF) is taken and normalised; the handler then refuses
  genuinely over-long lines with ``500 5.5.2``. Command lines keep
  aiosmtpd's limit.
* aiosmtpd's own fixed replies get enhanced status codes.
* No warning per connection: aiosmtpd warns about AUTH without TLS each time
  a session starts (deliberate on an operator-named loopback listener, whose
  start-up line says ``trusted=True``) and about its deprecated
  ``Session.login_data`` on each successful AUTH.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from typing import Any

from aiosmtpd.smtp import DATA_SIZE_DEFAULT, SMTP, AuthResult, Session, syntax
from swiftmail_relay.auth_failures import AuthFailures

TOO_MANY_FAILURES = "421 4.7.0 Too many failed authentications, closing connection"
_ENHANCED = {
    "500 Line too long (see RFC5321 4.5.3.1.6)": "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)",
    "552 Error: Too much mail data": "552 5.3.4 Message too big for this system",
}
_CHECK_OFF_LOOP = AuthResult(success=False, handled=True)
_PER_SESSION_WARNING = "auth_required == True but auth_require_tls == False"


class _PerSessionWarnings(logging.Filter):
    """Drop aiosmtpd's AUTH-without-TLS warning, which it repeats for every session."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != _PER_SESSION_WARNING


logging.getLogger("mail.log").addFilter(_PerSessionWarnings())


class _Session(Session):
    """aiosmtpd's session without the deprecation warning on ``login_data``."""

    @property
    def login_data(self) -> Any:
        """The AUTH login name (kept because aiosmtpd still sets it)."""
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class RelaySMTP(SMTP):
    """One SMTP session of a relay listener (submission or bounces)."""

    def __init__(self, handler: Any, *, auth_failures: AuthFailures | None = None,
                 auth_executor: Executor | None = None, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.auth_failures = auth_failures or AuthFailures()
        self.auth_executor = auth_executor  # None: the loop's default executor
        self._presented: tuple[str, Any] | None = None

    def _create_session(self) -> Session:
        return _Session(self.loop)

    async def push(self, status: bytes | str) -> None:
        """Send a reply, with an enhanced code where aiosmtpd's own text lacks one."""
        if isinstance(status, str):
            status = _ENHANCED.get(status, status)
        await super().push(status)

    # DATA -------------------------------------------------------------------

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """Read the message with the line limit raised to the message size limit."""
        reader = self._reader
        limit = max(SMTP.line_length_limit, (self.data_size_limit or DATA_SIZE_DEFAULT) + 2)
        # NOTE: asyncio.StreamReader keeps its limit in ``_limit``; it is set
        # here for the data phase only, so a command line stays bounded.
        self.line_length_limit = limit
        reader._limit = limit  # type: ignore[attr-defined]
        try:
            await super().smtp_DATA(arg)
        finally:
            del self.line_length_limit
            reader._limit = SMTP.line_length_limit  # type: ignore[attr-defined]

    # AUTH -------------------------------------------------------------------

    @property
    def _peer_address(self) -> str:
        peer = self.session.peer if self.session is not None else None
        return str(peer[0]) if isinstance(peer, tuple) else str(peer or "")

    async def _disconnect(self, reply: str) -> None:
        await self.push(reply)
        if self.transport is not None:
            self.transport.close()

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        """Refuse AUTH from an address that failed too often; else authenticate."""
        if await self.auth_failures.blocked(self._peer_address):
            await self._disconnect(TOO_MANY_FAILURES)
            return
        await super().smtp_AUTH(arg)

    def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult:
        # aiosmtpd calls this synchronously once it has the credentials; keep
        # them for ``_check`` to verify in a thread.
        self._presented = (mechanism, auth_data)
        return _CHECK_OFF_LOOP

    async def _check(self, result: AuthResult) -> AuthResult:
        if result is not _CHECK_OFF_LOOP or self._presented is None:
            return result  # the client's input was refused before any check
        mechanism, auth_data = self._presented
        self._presented = None
        result = await asyncio.get_running_loop().run_in_executor(
            self.auth_executor, SMTP._authenticate, self, mechanism, auth_data)
        if result.success or (result.message or "").startswith("454"):
            return result  # a temporary failure is no failed guess
        delay = await self.auth_failures.failed(self._peer_address)
        if await self.auth_failures.blocked(self._peer_address):
            await asyncio.sleep(delay)
            await self._disconnect(TOO_MANY_FAILURES)
            return AuthResult(success=False, handled=True)
        await asyncio.sleep(delay)
        return result

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        """AUTH PLAIN, checked off the loop."""
        return await self._check(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        """AUTH LOGIN, checked off the loop."""
        return await self._check(await super().auth_LOGIN(_, args))
