"""Delivering one transaction to a route's MX hosts with aiosmtplib.

Next MX (and next address) on connect failure, a 4xx/5xx greeting or a TLS
failure; never after a reply to MAIL, RCPT or DATA. Opportunistic STARTTLS
with re-EHLO; a host whose handshake fails is retried in clear at once and
remembered. Connections are reused per destination site up to
``messages_per_connection``; a 421 on a reused connection reconnects at once.
Several recipients of one domain share one transaction, pipelined (RFC 2920)
when the peer offers PIPELINING.

A connection's slot (the local per-site count and the shared Redis lease)
is returned on every path: a transaction that raises anything discards its
connection. MAIL carries SMTPUTF8 when an address is non-ASCII or the
submission used it, and BODY=8BITMIME when the body has 8-bit bytes or the
submission declared it; a next hop without the extension gets no attempt:
the recipients bounce at once with a 5.6.x reason (RFC 6531, RFC 6152).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiosmtplib
import structlog
from swiftmail_relay import metrics
from swiftmail_relay.classify import Reply
from swiftmail_relay.config import RelayConfig
from swiftmail_relay.dkim import to_crlf
from swiftmail_relay.mta_sts import StsPolicy
from swiftmail_relay.mx import MxHost, Route
from swiftmail_relay.tls_policy import HostPolicy, RetryUnverified, TlsPolicies, TlsPolicyFailed

log = structlog.get_logger("swiftmail.relay.delivery")
IDLE_SECONDS = 10.0
NO_TLS_SECONDS = 3600.0


@dataclasses.dataclass
class Connection:
    """An open SMTP session to one MX address."""

    client: aiosmtplib.SMTP
    host: MxHost
    address: str
    site: str
    tls: bool
    messages: int = 0
    verified: str = ""  # "pkix" or "dane" when a TLS policy checked the certificate
    idle_since: float = 0.0


_BARE_CR = re.compile(rb"\r(?!\n)")
_DOT_LINE = re.compile(rb"\r\n\.")


def dot_stuff(message: bytes, *, crlf: bool = False) -> bytes:
    """Return ``message`` as DATA content: CRLF lines, dot-stuffed, terminated.

    APPSEC: bare CR and bare LF become CRLF before stuffing, so no
    ``<LF>.<CR><LF>`` or ``<CR>.<CR>`` sequence can end DATA early at a
    peer that is lax about line endings (SMTP smuggling). ``crlf`` says the
    bytes are CRLF throughout already (``Envelope.crlf``: the platform
    hand-off's own output), so that check is skipped.
    """
    if crlf:
        data = message
    elif (pairs := message.count(b"\r\n")) == message.count(b"\r") \
            and message.count(b"\n") == pairs:
        data = message  # CRLF throughout already (three C-speed counts)
    else:
        data = to_crlf(message)
        if data.count(b"\r") != data.count(b"\r\n"):
            data = _BARE_CR.sub(b"\r\n", data)
    if data.startswith(b"."):
        data = b"." + data
    if _DOT_LINE.search(data):  # NOTE: re's literal search: about twice as fast as ``in``
        data = _DOT_LINE.sub(b"\r\n..", data)  # NOTE: about twice as fast as bytes.replace
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def _slot_backoff(refused: int) -> float:
    """Return seconds before asking for a shared slot again: 50 ms doubling to 2 s, ±50 %."""
    return min(2.0, 0.05 * 2 ** min(refused - 1, 6)) * random.uniform(0.5, 1.5)


class Throttled(Exception):
    """The admission check said wait: nothing was sent; ``wait`` says how long."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"throttled for {float(wait):.1f} s")
        self.wait = wait


class ConnectFailed(Exception):
    """Every MX of a route failed before a transaction could start."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def _tls_context() -> ssl.SSLContext:
    # NOTE: opportunistic TLS (RFC 3207 for MX delivery): encrypt whatever the
    # peer offers, without certificate checks; MTA-STS/DANE would tighten this.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Deliverer:
    """Send transactions over pooled connections, one pool per site."""

    def __init__(
        self,
        config: RelayConfig,
        *,
        acquire_slot: Callable[[str], Awaitable[bool]] | None = None,
        release_slot: Callable[[str], Awaitable[None]] | None = None,
        tls_policies: TlsPolicies | None = None,
        source_address: str | None = None,
    ) -> None:
        self.config = config
        self.source_address = source_address  # local IP to bind (IP pools), None: any
        self._tls = tls_policies
        self._idle: dict[str, list[Connection]] = {}
        self._open: dict[str, int] = {}
        self._changed: dict[str, asyncio.Condition] = {}
        self._no_tls: dict[str, float] = {}
        self._tls_context = _tls_context()
        self._acquire_slot = acquire_slot
        self._release_slot = release_slot
        self._tasks: set[asyncio.Future[None]] = set()

    # Connections ----------------------------------------------------------

    def _condition(self, site: str) -> asyncio.Condition:
        if site not in self._changed:
            self._changed[site] = asyncio.Condition()
        return self._changed[site]

    async def _connect_address(self, host: MxHost, address: str, site: str,
                               policy: HostPolicy | None = None) -> Connection:
        """Open, greet, EHLO and (when offered) STARTTLS to one address."""
        try_tls = self._no_tls.get(address, 0.0) < time.monotonic()
        if policy is not None and policy.policy_type == "no-policy-found":
            policy = None
        client = aiosmtplib.SMTP(
            hostname=address, port=self.config.smtp_port, local_hostname=self.config.hostname,
            timeout=self.config.command_timeout, start_tls=False, use_tls=False,
            source_address=(self.source_address, 0) if self.source_address else None,
        )
        await asyncio.wait_for(client.connect(timeout=self.config.connect_timeout),
                               self.config.connect_timeout + 1)
        await client.ehlo()
        tls = False
        if policy is not None and self._tls is not None:
            try:
                verified = await self._tls.starttls(client, host, address, policy)
            except RetryUnverified:
                client.close()
                return await self._connect_address(host, address, site)
            except TlsPolicyFailed:
                client.close()
                raise
            except (aiosmtplib.SMTPException, ssl.SSLError, OSError):
                client.close()
                self._no_tls[address] = time.monotonic() + NO_TLS_SECONDS
                return await self._connect_address(host, address, site)
            tls = verified != ""
            metrics.CONNECTIONS.labels(tls="yes" if tls else "no").inc()
            return Connection(client, host, address, site, tls, verified=verified)
        if try_tls and client.supports_extension("starttls"):
            try:
                await client.starttls(server_hostname=host.name, tls_context=self._tls_context)
                await client.ehlo()
                tls = True
            except (aiosmtplib.SMTPException, ssl.SSLError, OSError) as ex:
                # Remember and retry this host in clear at once.
                self._no_tls[address] = time.monotonic() + NO_TLS_SECONDS
                log.info("starttls_failed", mx=host.name, address=address, error=str(ex))
                metrics.TLS_FAILURES.inc()
                client.close()
                return await self._connect_address(host, address, site)
        metrics.CONNECTIONS.labels(tls="yes" if tls else "no").inc()
        return Connection(client, host, address, site, tls)

    async def _open_connection(self, route: Route, sts: StsPolicy | None = None) -> Connection:
        last = Reply(451, "4.4.1 no MX host could be reached", local=True)
        for host in route.hosts:
            policy = None
            if self._tls is not None:
                try:
                    policy = await self._tls.for_host(route.domain, sts, host)
                except TlsPolicyFailed as ex:
                    last = Reply(451, f"4.7.5 TLS policy: {host.name}: {ex}", local=True)
                    continue
            for address in host.addresses:
                try:
                    return await self._connect_address(host, address, route.site, policy)
                except TlsPolicyFailed as ex:
                    last = Reply(451, f"4.7.5 TLS policy: {host.name}[{address}]: {ex}",
                                 local=True)
                except aiosmtplib.SMTPResponseException as ex:
                    # 4xx/5xx greeting or EHLO refusal: try the next MX.
                    last = Reply(ex.code, f"{ex.message} (from {host.name})".strip())
                except (TimeoutError, aiosmtplib.SMTPException, OSError) as ex:
                    last = Reply(451, f"4.4.1 connect to {host.name}[{address}] failed: {ex}",
                                 local=True)
        # NOTE: a remote 5xx greeting on every MX is still a transient
        # failure for the message (RFC 5321 §3.8 treats it as "no service").
        if last.code >= 500:
            last = Reply(451, f"4.4.1 all MX hosts refused service: {last}", local=True)
        raise ConnectFailed(last)

    async def _checkout(self, route: Route, sts: StsPolicy | None = None,
                        on_wait: Callable[[], None] | None = None) -> tuple[Connection, bool]:
        """Return (connection, reused): an idle one, or a new one within the cap."""
        site = route.site
        condition = self._condition(site)
        refused = 0
        async with condition:
            while True:
                idle = self._idle.get(site, [])
                while idle:
                    connection = idle.pop()
                    if time.monotonic() - connection.idle_since < IDLE_SECONDS and (
                            self._tls is None or self._tls.acceptable(connection, sts)):
                        return connection, True
                    self._discard(connection)
                if self._open.get(site, 0) < self.config.max_connections_per_site:
                    if self._acquire_slot is None or await self._acquire_slot(site):
                        self._open[site] = self._open.get(site, 0) + 1
                        break
                    # Shared cap reached (other relays hold the slots): ask again
                    # after a growing, jittered pause, or at once on a local release.
                    refused += 1
                    if on_wait is not None:
                        on_wait()
                    try:
                        async with asyncio.timeout(_slot_backoff(refused)):
                            await condition.wait()
                    except TimeoutError:
                        pass
                    continue
                if on_wait is not None:
                    on_wait()
                await condition.wait()
        try:
            return await self._open_connection(route, sts), False
        except BaseException:
            await self._closed(site)
            raise

    async def _closed(self, site: str) -> None:
        self._open[site] = max(0, self._open.get(site, 0) - 1)
        if self._release_slot is not None:
            await self._release_slot(site)
        condition = self._condition(site)
        async with condition:
            condition.notify()

    def _discard(self, connection: Connection, notify: bool = True) -> None:
        connection.client.close()
        self._open[connection.site] = max(0, self._open.get(connection.site, 0) - 1)
        if self._release_slot is not None:
            self._background(self._release_slot(connection.site))
        if notify:
            self._background(self._notify(connection.site))

    def _background(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notify(self, site: str) -> None:
        condition = self._condition(site)
        async with condition:
            condition.notify()

    async def _checkin(self, connection: Connection, cap: int) -> None:
        if connection.messages >= cap or not connection.client.is_connected:
            try:
                if connection.client.is_connected:
                    await connection.client.quit(timeout=5)
            except (TimeoutError, aiosmtplib.SMTPException, OSError, ValueError):
                pass  # closed below either way
            finally:
                self._discard(connection)
            return
        connection.idle_since = since = time.monotonic()
        condition = self._condition(connection.site)
        async with condition:
            self._idle.setdefault(connection.site, []).append(connection)
            condition.notify()
        # An idle connection holds a shared slot (renewed while this process lives):
        # close it once stale, or another relay for the site could wait for ever.
        asyncio.get_running_loop().call_later(
            IDLE_SECONDS, lambda: self._background(self._close_if_idle(connection, since)))

    async def _close_if_idle(self, connection: Connection, since: float) -> None:
        """Close ``connection`` if it has sat idle since ``since``, giving its slot back."""
        idle = self._idle.get(connection.site, [])
        if connection not in idle or connection.idle_since != since:
            return  # taken again meanwhile
        idle.remove(connection)
        try:
            await connection.client.quit(timeout=2)
        except (TimeoutError, aiosmtplib.SMTPException, OSError, ValueError):
            pass  # closed below either way
        finally:
            self._discard(connection)

    # Transactions -----------------------------------------------------------

    async def send(
        self,
        route: Route,
        mail_from: str,
        recipients: Sequence[str],
        message: bytes,
        *,
        messages_per_connection: int | None = None,
        smtputf8: bool = False,
        eight_bit: bool = False,
        crlf: bool = False,
        admit: Callable[[], Awaitable[float]] | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> dict[str, Reply]:
        """Deliver one message to recipients of one domain; a Reply per recipient.

        ``smtputf8`` and ``eight_bit`` say the submission used SMTPUTF8 or
        BODY=8BITMIME; either is also inferred from the addresses and bytes.
        ``crlf`` says ``message`` is CRLF throughout (``Envelope.crlf``).
        ``admit`` runs once a connection is in hand, right before MAIL: a
        positive answer checks the connection back in unused and raises
        ``Throttled``. ``on_wait`` is called when the site's connection cap
        makes this message wait for a slot.
        """
        cap = messages_per_connection or self.config.messages_per_connection
        refused = _refuse_controls(mail_from, recipients)
        if refused is not None:
            return refused
        options = _MailOptions(
            smtputf8=smtputf8,
            utf8_addresses=not all(a.isascii() for a in (mail_from, *recipients)),
            utf8_headers=smtputf8 and not _header_block(message).isascii(),
            eight_bit=eight_bit or not message.isascii(), crlf=crlf)
        sts = await self._tls.sts(route.domain) if self._tls is not None else None
        try:
            connection, reused = await self._checkout(route, sts, on_wait)
        except ConnectFailed as failure:
            return dict.fromkeys(recipients, failure.reply)
        if admit is not None:
            try:
                wait = await admit()
            except BaseException:
                await self._checkin(connection, cap)
                raise
            if wait > 0:
                await self._checkin(connection, cap)
                raise Throttled(wait)
        try:
            replies = await self._attempt(connection, mail_from, recipients, message, options)
        except _Reconnect as closed:
            if not reused:
                return dict.fromkeys(recipients, closed.reply)
            try:
                connection, _ = await self._checkout(route, sts)
            except ConnectFailed as failure:
                return dict.fromkeys(recipients, failure.reply)
            try:
                replies = await self._attempt(connection, mail_from, recipients, message, options)
            except _Reconnect as closed:
                return dict.fromkeys(recipients, closed.reply)
        connection.messages += 1
        await self._checkin(connection, cap)
        return replies

    async def _attempt(self, connection: Connection, mail_from: str,
                       recipients: Sequence[str], message: bytes,
                       options: _MailOptions) -> dict[str, Reply]:
        """Run one transaction; on any exception the connection is discarded.

        An unexpected error (a bug, a peer nobody foresaw) becomes a local
        temporary failure for every recipient: the slot goes back, the
        message is retried, the destination never stalls.
        """
        try:
            return await self._transaction(connection, mail_from, recipients, message, options)
        except _Reconnect:
            self._discard(connection)
            raise
        except Exception as ex:
            log.exception("transaction_failed", mx=connection.host.name, error=repr(ex))
            self._discard(connection)
            failure = Reply(451, f"4.3.0 local error talking to {connection.host.name}: "
                                 f"{type(ex).__name__}", local=True)
            return dict.fromkeys(recipients, failure)
        except BaseException:
            self._discard(connection)
            raise

    async def _transaction(
        self, connection: Connection, mail_from: str, recipients: Sequence[str], message: bytes,
        options: _MailOptions | None = None,
    ) -> dict[str, Reply]:
        client = connection.client
        replies: dict[str, Reply] = {}
        options = options or _MailOptions()
        unsupported = options.unsupported(client, connection.host.name)
        if unsupported is not None:
            return dict.fromkeys(recipients, unsupported)
        parameters = options.parameters(client)
        try:
            if client.supports_extension("pipelining"):
                return await self._pipelined(client, mail_from, recipients, message, replies,
                                             parameters, crlf=options.crlf)
            try:
                await self._mail(client, mail_from, parameters)
            except aiosmtplib.SMTPResponseException as ex:
                if ex.code == 421:
                    raise _Reconnect(Reply(ex.code, ex.message)) from ex
                await self._reset(client)
                return dict.fromkeys(recipients, Reply(ex.code, ex.message))
            accepted = []
            for recipient in recipients:
                try:
                    await self._rcpt(client, recipient)
                    accepted.append(recipient)
                except aiosmtplib.SMTPResponseException as ex:
                    if ex.code == 421:
                        raise _Reconnect(Reply(ex.code, ex.message)) from ex
                    replies[recipient] = Reply(ex.code, ex.message)
            if not accepted:
                await self._reset(client)
                return replies
            try:
                response = await self._data(client, message, crlf=options.crlf)
            except aiosmtplib.SMTPResponseException as ex:
                for recipient in accepted:
                    replies[recipient] = Reply(ex.code, ex.message)
                return replies
            for recipient in accepted:
                replies[recipient] = Reply(response.code, response.message)
            return replies
        except _Reconnect:
            raise
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as ex:
            client.close()
            if not replies and isinstance(ex, aiosmtplib.SMTPServerDisconnected) \
                    and connection.messages > 0:
                raise _Reconnect(Reply(421, "4.4.2 connection closed", local=True)) from ex
            failure = Reply(451, f"4.4.2 connection to {connection.host.name} lost: {ex}",
                            local=True)
            return {r: replies.get(r, failure) for r in recipients}

    # NOTE: MAIL, RCPT and DATA go through aiosmtplib's protocol directly:
    # its high-level methods parse every address with email.utils and run two
    # regexes over every message body, a fifth of the relay's CPU per message.
    # Addresses are sent as UTF-8: a non-ASCII one only ever goes out after
    # SMTPUTF8 was checked and put on MAIL (``_MailOptions``).

    async def _command(self, client: aiosmtplib.SMTP, *args: bytes) -> Any:
        if client.protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Server not connected")
        return await client.protocol.execute_command(*args, timeout=self.config.command_timeout)

    async def _mail(self, client: aiosmtplib.SMTP, sender: str,
                    parameters: tuple[bytes, ...] = ()) -> None:
        response = await self._command(client, b"MAIL", b"FROM:<" + sender.encode() + b">",
                                       *parameters)
        if response.code != 250:
            raise aiosmtplib.SMTPSenderRefused(response.code, response.message, sender)

    async def _rcpt(self, client: aiosmtplib.SMTP, recipient: str) -> None:
        response = await self._command(client, b"RCPT", b"TO:<" + recipient.encode() + b">")
        if response.code not in (250, 251):
            raise aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient)

    async def _data(self, client: aiosmtplib.SMTP, message: bytes, *, crlf: bool = False) -> Any:
        start = await self._command(client, b"DATA")
        if start.code != 354:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        protocol = client.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Server not connected")
        # No await between write and read_response: the reply cannot be missed.
        protocol.write(dot_stuff(message, crlf=crlf))
        response = await protocol.read_response(timeout=self.config.command_timeout)
        if response.code != 250:
            raise aiosmtplib.SMTPDataError(response.code, response.message)
        return response

    async def _pipelined(
        self, client: aiosmtplib.SMTP, sender: str, recipients: Sequence[str], message: bytes,
        replies: dict[str, Reply], parameters: tuple[bytes, ...] = (), *, crlf: bool = False,
    ) -> dict[str, Reply]:
        """Run one transaction with MAIL, every RCPT and DATA in one write (RFC 2920)."""
        protocol = client.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Server not connected")
        timeout = self.config.command_timeout
        commands = [b" ".join((b"MAIL FROM:<" + sender.encode() + b">", *parameters)) + b"\r\n"]
        commands.extend(b"RCPT TO:<" + r.encode() + b">\r\n" for r in recipients)
        commands.append(b"DATA\r\n")
        reader = _PipelinedReplies(protocol, timeout)
        try:
            protocol.write(b"".join(commands))
            mail = await reader.next()
            if mail.code == 421:
                raise _Reconnect(Reply(mail.code, mail.message))
            accepted = []
            for recipient in recipients:
                response = await reader.next()
                if response.code == 421:
                    raise _Reconnect(Reply(response.code, response.message))
                if mail.code != 250:
                    continue
                if response.code in (250, 251):
                    accepted.append(recipient)
                else:
                    replies[recipient] = Reply(response.code, response.message)
            start = await reader.next()
            if start.code == 354 and reader.pending:
                # A compliant peer says nothing after 354 until the body ends.
                raise aiosmtplib.SMTPServerDisconnected("unexpected data after 354")
        finally:
            reader.close()
        if not accepted:
            if start.code == 354:
                # RFC 2920 §3.1: DATA was accepted with no valid recipient;
                # end the empty message at once (its reply means nothing).
                protocol.write(b".\r\n")
                await protocol.read_response(timeout=timeout)
            else:
                await self._reset(client)
            if mail.code != 250:
                return dict.fromkeys(recipients, Reply(mail.code, mail.message))
            return replies
        if start.code != 354:
            final = Reply(start.code, start.message)
        else:
            # No await between write and read_response: the reply cannot be missed.
            protocol.write(dot_stuff(message, crlf=crlf))
            response = await protocol.read_response(timeout=timeout)
            final = Reply(response.code, response.message)
        for recipient in accepted:
            replies[recipient] = final
        return replies

    @staticmethod
    async def _reset(client: aiosmtplib.SMTP) -> None:
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, OSError):
            client.close()

    async def close(self) -> None:
        """Close every idle connection and give back every shared slot."""
        for connections in self._idle.values():
            for connection in connections:
                try:
                    await connection.client.quit(timeout=2)
                except (TimeoutError, aiosmtplib.SMTPException, OSError):
                    connection.client.close()
        self._idle.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._release_slot is not None:
            # Slots of idle and in-flight connections alike: none may leak.
            for site, count in list(self._open.items()):
                for _ in range(count):
                    await self._release_slot(site)
        self._open.clear()


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _refuse_controls(sender: str, recipients: Sequence[str]) -> dict[str, Reply] | None:
    """Refuse a transaction whose addresses hold control characters.

    APPSEC: the pipelined write bypasses aiosmtplib's command-injection
    check, so a CR/LF in an address never reaches any write path.
    """
    if not any(_CONTROL.search(a) for a in (sender, *recipients)):
        return None
    refused = Reply(553, "5.1.3 address contains a control character", local=True)
    return dict.fromkeys(recipients, refused)


def _header_block(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n")
    if end < 0:
        end = message.find(b"\n\n")
    return message if end < 0 else message[:end]


@dataclasses.dataclass(frozen=True)
class _MailOptions:
    """What MAIL must declare for one message, and what the peer must offer."""

    smtputf8: bool = False  # the submission used SMTPUTF8
    utf8_addresses: bool = False  # the reverse path or a recipient is non-ASCII
    utf8_headers: bool = False  # an SMTPUTF8 submission whose headers are UTF-8
    eight_bit: bool = False  # 8-bit body bytes, or the submission declared 8BITMIME
    crlf: bool = False  # the body is CRLF throughout (``Envelope.crlf``): ``dot_stuff`` trusts it

    def unsupported(self, client: aiosmtplib.SMTP, host: str) -> Reply | None:
        """Return the bounce reply when the peer lacks a needed extension.

        An SMTPUTF8 submission whose addresses and headers are all ASCII
        goes to a peer without SMTPUTF8 as ordinary mail.
        """
        if (self.utf8_addresses or self.utf8_headers) \
                and not client.supports_extension("smtputf8"):
            what = "a non-ASCII address" if self.utf8_addresses else "UTF-8 headers"
            return Reply(553 if self.utf8_addresses else 554,
                         f"{'5.6.7' if self.utf8_addresses else '5.6.9'} {host} does not "
                         f"support SMTPUTF8, needed for {what} (RFC 6531)", local=True)
        if self.eight_bit and not client.supports_extension("8bitmime"):
            return Reply(554, f"5.6.3 {host} does not support 8BITMIME, needed for this "
                              "8-bit message (RFC 6152)", local=True)
        return None

    def parameters(self, client: aiosmtplib.SMTP) -> tuple[bytes, ...]:
        """Return the MAIL parameters (BODY=8BITMIME, SMTPUTF8) for this peer."""
        found: list[bytes] = []
        if self.eight_bit and client.supports_extension("8bitmime"):
            found.append(b"BODY=8BITMIME")
        if (self.smtputf8 or self.utf8_addresses) and client.supports_extension("smtputf8"):
            found.append(b"SMTPUTF8")
        return tuple(found)


class _PipelinedReplies:
    """Read pipelined replies off an aiosmtplib protocol, in order, none dropped.

    NOTE: ``SMTPProtocol.read_response`` cannot read pipelined replies.
    ``data_received`` parses only the first complete reply of a packet into
    ``_response_waiter`` and leaves the rest in ``_buffer``, where nothing
    parses it until more data arrives (a packet holding every reply would
    hang the next read); and it DROPS any packet that arrives while the
    waiter is already done or ``_response_pending`` is false, which is the
    case between one reply being parsed and the next ``read_response``
    call (the wake-up takes a few loop iterations, long enough for the
    peer's next reply to land). So while pipelined replies are expected,
    this reader shadows the protocol's ``data_received`` on the instance
    (both the plain and the TLS transport look the method up per call):
    every byte is appended to the protocol's ``_buffer`` and replies are
    parsed from it one at a time, in order, with the protocol's own
    ``_read_response_from_buffer``. A disconnect or EOF still lands on
    ``_response_waiter`` (``connection_lost``/``eof_received`` set an
    exception there), which the reader watches but does not consume.
    ``close`` restores the method; the buffer is then empty (checked after
    354) and the protocol is back in its normal between-commands state, so
    the body's reply is read with ``read_response`` exactly as in ``_data``.
    """

    def __init__(self, protocol: Any, timeout: float) -> None:
        self._protocol = protocol
        self._timeout = timeout
        self._arrived: asyncio.Future[None] | None = None
        protocol.data_received = self._data_received

    @property
    def pending(self) -> bool:
        """Tell whether unread bytes are buffered."""
        return bool(self._protocol._buffer)

    def _data_received(self, data: bytes) -> None:
        self._protocol._buffer.extend(data)
        if self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(None)

    async def next(self) -> Any:
        """Return the next reply; raise SMTPServerDisconnected or a read timeout."""
        protocol = self._protocol
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while True:
            try:
                response = protocol._read_response_from_buffer()
            except aiosmtplib.SMTPResponseException as ex:
                raise aiosmtplib.SMTPServerDisconnected(f"malformed reply: {ex.message}") from ex
            if response is not None:
                return response
            if len(protocol._buffer) > 65536:
                raise aiosmtplib.SMTPServerDisconnected("reply too long")
            lost = protocol._response_waiter
            if lost is None or lost.done() or not protocol.is_connected:
                raise aiosmtplib.SMTPServerDisconnected("Connection lost")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response")
            self._arrived = loop.create_future()
            await asyncio.wait({self._arrived, lost}, timeout=remaining,
                               return_when=asyncio.FIRST_COMPLETED)

    def close(self) -> None:
        """Give ``data_received`` back to the protocol."""
        vars(self._protocol).pop("data_received", None)
        if self._arrived is not None and not self._arrived.done():
            self._arrived.cancel()


class _Reconnect(Exception):
    """The peer closed a reused connection (421 or EOF): reconnect at once."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply
