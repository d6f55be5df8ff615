"""A real DNS server on loopback for tests (dnspython, UDP and TCP).

Usage::

    server = DnsServer().start()          # 127.0.0.1, a free port
    server.add("example.com", "MX", "10 mx1.example.com.")
    server.add("mx1.example.com", "A", "127.0.0.2")
    server.null_mx("nomail.example")      # MX 0 .
    server.servfail.add("broken.example")
    server.slow["slow.example"] = 3.0     # seconds before answering
    server.authenticated.add("_25._tcp.mx.example")  # answers carry the AD bit
    ... settings dns_nameservers=127.0.0.1, dns_port=server.port ...
    server.stop()

Unknown names answer NXDOMAIN; known names without the asked type answer
NOERROR with no records (so implicit MX falls back to A/AAAA).
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
import time

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class DnsServer:
    """An authoritative-looking test server answering from a dict."""

    def __init__(self, host: str = "127.0.0.1", ttl: int = 300) -> None:
        self.host = host
        self.ttl = ttl
        self.records: dict[str, dict[str, list[str]]] = {}
        self.servfail: set[str] = set()
        self.slow: dict[str, float] = {}
        # Names answered as DNSSEC-validated (AD bit), as a validating resolver would.
        self.authenticated: set[str] = set()
        self.queries: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._udp: socket.socket | None = None
        self._tcp: socketserver.ThreadingTCPServer | None = None
        self.port = 0

    # Zone data ------------------------------------------------------------

    @staticmethod
    def _key(name: str) -> str:
        return name.rstrip(".").lower()

    def add(self, name: str, rdtype: str, *values: str) -> DnsServer:
        """Add records of one type to a name."""
        with self._lock:
            self.records.setdefault(self._key(name), {}).setdefault(rdtype.upper(), []).extend(values)
        return self

    def null_mx(self, name: str) -> DnsServer:
        """Publish a null MX (RFC 7505) for ``name``."""
        return self.add(name, "MX", "0 .")

    def clear(self, name: str) -> None:
        """Forget a name entirely (it becomes NXDOMAIN)."""
        with self._lock:
            self.records.pop(self._key(name), None)

    # Answering --------------------------------------------------------------

    def answer(self, wire: bytes) -> bytes | None:
        """Build the response to one query in wire format."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = self._key(question.name.to_text())
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        delay = self.slow.get(name)
        if delay:
            time.sleep(delay)
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        with self._lock:
            known = self.records.get(name)
            values = list((known or {}).get(rdtype, ()))
        if known is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif values:
            rrset = dns.rrset.from_text_list(
                question.name, self.ttl, dns.rdataclass.IN, question.rdtype, values
            )
            response.answer.append(rrset)
            if name in self.authenticated:
                response.flags |= dns.flags.AD
        return response.to_wire(max_size=65535)

    # Serving ----------------------------------------------------------------

    def start(self) -> DnsServer:
        """Listen on UDP and TCP (same port) in background threads."""
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                connection = self.request
                header = connection.recv(2)
                if len(header) < 2:
                    return
                (length,) = struct.unpack("!H", header)
                data = b""
                while len(data) < length:
                    chunk = connection.recv(length - len(data))
                    if not chunk:
                        return
                    data += chunk
                reply = server.answer(data)
                if reply is not None:
                    connection.sendall(struct.pack("!H", len(reply)) + reply)

        for _ in range(20):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((self.host, 0))
            port = udp.getsockname()[1]
            try:
                socketserver.ThreadingTCPServer.allow_reuse_address = True
                tcp = socketserver.ThreadingTCPServer((self.host, port), Handler)
            except OSError:
                udp.close()
                continue
            break
        else:
            raise RuntimeError("no free port for the test DNS server")
        tcp.daemon_threads = True
        self._udp, self._tcp, self.port = udp, tcp, port
        threading.Thread(target=self._serve_udp, daemon=True).start()
        threading.Thread(target=tcp.serve_forever, daemon=True).start()
        return self

    def _serve_udp(self) -> None:
        assert self._udp is not None
        while True:
            try:
                data, peer = self._udp.recvfrom(65535)
            except OSError:
                return
            threading.Thread(target=self._reply_udp, args=(data, peer), daemon=True).start()

    def _reply_udp(self, data: bytes, peer: tuple[str, int]) -> None:
        reply = self.answer(data)
        if reply is not None and self._udp is not None:
            try:
                self._udp.sendto(reply, peer)
            except OSError:
                pass

    def stop(self) -> None:
        """Stop listening."""
        if self._tcp is not None:
            self._tcp.shutdown()
            self._tcp.server_close()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
