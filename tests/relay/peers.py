"""Receiving MXes for tests: small real SMTP servers on 127.0.0.x.

Each peer runs in its own thread and event loop and can accept, answer
4xx/5xx at any stage, greet with an error, advertise a STARTTLS that
breaks, drop the connection mid-DATA or stall. All peers of a test share one
port on distinct loopback addresses, as MX hosts share port 25.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable


@dataclasses.dataclass
class Received:
    """One message a peer accepted."""

    mail_from: str
    recipients: list[str]
    data: bytes


class SmtpPeer:
    """A scripted SMTP server on one loopback address."""

    def __init__(self, host: str, port: int = 0) -> None:
        self.host = host
        self.port = port
        self.greeting = "220 peer.test ESMTP"
        self.starttls = False  # advertise STARTTLS and then break the handshake
        self.rcpt: Callable[[str], str] = lambda address: "250 2.1.5 ok"
        self.data_reply: Callable[[bytes], str] = lambda data: "250 2.0.0 queued"
        self.mail_reply: Callable[[str], str] = lambda sender: "250 2.1.0 ok"
        self.on_data = "accept"  # accept | disconnect | stall
        self.extensions = ["SIZE 50000000", "8BITMIME"]  # what EHLO offers (besides STARTTLS)
        self.mail_commands: list[str] = []  # every MAIL command line as received
        self.messages: list[Received] = []
        self.connections = 0
        self.open_connections = 0
        self.max_open = 0
        self.tls_attempts = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._ready = threading.Event()

    def start(self) -> SmtpPeer:
        """Listen in a background thread; raise OSError if the port is taken."""
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._session, self.host, self.port, reuse_address=True))
                self.port = self._server.sockets[0].getsockname()[1]
            except OSError as ex:
                errors.append(ex)
                self._ready.set()
                return
            self._ready.set()
            loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        self._ready.wait(5)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._loop and self._server:
            async def close() -> None:
                assert self._server is not None
                self._server.close()
                sessions = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in sessions:
                    task.cancel()
                await asyncio.gather(*sessions, return_exceptions=True)

            asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)

    @property
    def recipients(self) -> list[str]:
        """Return every recipient of every accepted message."""
        return [r for m in self.messages for r in m.recipients]

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_connections += 1
        self.max_open = max(self.max_open, self.open_connections)
        state = {"open": True}
        try:
            await self._converse(reader, writer, state)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if state["open"]:
                self.open_connections -= 1
            writer.close()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        state: dict[str, bool]) -> None:
        async def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        await say(self.greeting)
        if not self.greeting.startswith("2"):
            return
        mail_from, recipients = "", []
        while True:
            line = (await reader.readline()).decode(errors="replace").rstrip("\r\n")
            if not line:
                return
            verb = line[:4].upper()
            if verb in ("EHLO", "HELO"):
                extensions = ["250-peer.test", *(f"250-{e}" for e in self.extensions)]
                if self.starttls:
                    extensions.append("250-STARTTLS")
                extensions.append("250 ENHANCEDSTATUSCODES")
                writer.write("\r\n".join(extensions).encode() + b"\r\n")
                await writer.drain()
            elif verb == "STAR":
                self.tls_attempts += 1
                await say("220 2.0.0 ready to start TLS")
                writer.write(b"this is not a TLS server hello\r\n" * 4)
                await writer.drain()
                return
            elif verb == "MAIL":
                self.mail_commands.append(line)
                mail_from = line.split(":", 1)[1].strip().split(" ")[0].strip("<>")
                recipients = []
                await say(self.mail_reply(mail_from))
            elif verb == "RCPT":
                address = line.split(":", 1)[1].strip().split(" ")[0].strip("<>")
                reply = self.rcpt(address)
                if reply.startswith("2"):
                    recipients.append(address)
                await say(reply)
                if reply.startswith("421"):
                    return
            elif verb == "DATA":
                await say("354 go ahead")
                chunks = []
                while True:
                    chunk = await reader.readline()
                    if not chunk:
                        return
                    if chunk == b".\r\n":
                        break
                    if self.on_data == "disconnect":
                        return
                    if self.on_data == "stall":
                        await asyncio.sleep(3600)
                    chunks.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                data = b"".join(chunks)
                reply = self.data_reply(data)
                if reply.startswith("2"):
                    self.messages.append(Received(mail_from, list(recipients), data))
                await say(reply)
            elif verb == "RSET":
                mail_from, recipients = "", []
                await say("250 2.0.0 ok")
            elif verb == "QUIT":
                # Count the connection closed before the client can see 221.
                state["open"] = False
                self.open_connections -= 1
                await say("221 2.0.0 bye")
                return
            elif verb == "NOOP":
                await say("250 2.0.0 ok")
            else:
                await say("502 5.5.2 not implemented")


def start_peers(count: int, first: int = 2) -> list[SmtpPeer]:
    """Start ``count`` peers on 127.0.0.<first>... sharing one free port."""
    for _ in range(20):
        anchor = SmtpPeer(f"127.0.0.{first}").start()
        peers = [anchor]
        try:
            for index in range(1, count):
                peers.append(SmtpPeer(f"127.0.0.{first + index}", anchor.port).start())
        except OSError:
            for peer in peers:
                peer.stop()
            continue
        return peers
    raise RuntimeError("no common free port for the test MX peers")
