"""What a submitted message must be, and what the relay adds, before it is spooled.

The relay emits every message with CRLF line endings (the SMTP client turns
a bare LF or a bare CR into CRLF), so the checks here read lines the same
way: a header line ends at LF or CRLF. ``canonical_line_endings`` is applied
once, before signing, so the signed bytes are the bytes sent; a bare CR in a
body would otherwise be signed as is and arrive as a line break, and both
DKIM verifiers report the body altered.

APPSEC: ``header_problem`` refuses header injection: NUL bytes, a bare CR,
lines that are neither a field nor a continuation, duplicated single fields
(a second From hidden behind a bare LF included), and a From with several
mailboxes but no Sender. ``author_domains`` returns every domain the
recipient will see as the author, so each one is checked, not only the first.
"""

from __future__ import annotations

import datetime
import email.message
import email.policy
import email.utils
import re
from collections import Counter
from email.errors import MessageError
from email.parser import HeaderParser
from email.utils import parseaddr

from swiftmail_relay import dkim

MAX_LINE_OCTETS = 998  # RFC 5322 §2.1.1, CRLF excluded
SINGLE_HEADERS = ("from", "sender", "to", "cc", "subject", "date", "message-id", "reply-to")
_HEADER_NAME = re.compile(rb"^[!-9;-~]+$")
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_LONG_LINE = re.compile(rb"[^\r\n]{%d}" % (MAX_LINE_OCTETS + 1))
_HELO_UNSAFE = re.compile(r"[^A-Za-z0-9.\-\[\]:_]")
_PARSER = HeaderParser(policy=email.policy.default)


def _parse_headers(block: bytes) -> email.message.EmailMessage:
    """Parse a header block; 8-bit text is read as UTF-8 (RFC 6532), as ``from_domain`` does."""
    return _PARSER.parsestr(block.decode("utf-8", "surrogateescape") + "\r\n")  # type: ignore[return-value]


def from_domain(raw: bytes) -> str | None:
    """Return the domain of the From header of a message, lower case."""
    header_block, _ = dkim.split_message(raw)
    for name, value in dkim.parse_headers(header_block):
        if name.strip().lower() == b"from":
            address = parseaddr(value.decode("utf-8", "replace").replace("\r\n", ""))[1]
            return address.rpartition("@")[2].lower() or None
    return None


def canonical_line_endings(raw: bytes) -> bytes:
    """Return ``raw`` with every line break (CRLF, bare LF, bare CR) as CRLF."""
    if _BARE.search(raw) is None:
        return raw
    return _LINE_BREAK.sub(b"\r\n", raw)


def split_header_block(raw: bytes) -> tuple[list[bytes], int]:
    """Return the header lines (line breaks removed) and the offset of the body.

    A line ends at LF, with or without the CR before it; the block ends at
    the first empty line (or at the end of the message).
    """
    lines: list[bytes] = []
    start = 0
    while start < len(raw):
        end = raw.find(b"\n", start)
        stop = len(raw) if end == -1 else end + 1
        line = raw[start:end if end != -1 else len(raw)]
        if line.endswith(b"\r"):
            line = line[:-1]
        start = stop
        if not line:
            break
        lines.append(line)
    return lines, start


def header_problem(raw: bytes) -> str | None:
    """Return why a message's header block is unacceptable, or None."""
    lines, body_at = split_header_block(raw)
    block = raw[:body_at]
    if b"\x00" in block:
        return "NUL byte in the header"
    if any(b"\r" in line for line in lines):
        return "bare CR in the header"
    for index, line in enumerate(lines):
        if line[:1] in (b" ", b"\t"):
            if index == 0:
                return "malformed header line"
            continue
        name, sep, _ = line.partition(b":")
        if not sep or not _HEADER_NAME.match(name):
            return "malformed header line"
    headers = _parse_headers(canonical_line_endings(block))
    counts = Counter(name.lower() for name in headers.keys())
    for name in SINGLE_HEADERS:
        if counts[name] > 1:
            return f"more than one {name} header"
    if counts["from"] != 1:
        return "exactly one From header is required"
    try:
        authors = headers["From"].addresses
        senders = headers["Sender"].addresses if counts["sender"] else ()
    except (MessageError, AttributeError, IndexError, TypeError, ValueError):
        return "malformed From or Sender header"
    if not authors or any(not a.domain for a in authors):
        return "no usable From address"
    if len(authors) > 1 and not senders:
        return "a From header with more than one mailbox needs a Sender header"
    if counts["sender"] and (len(senders) != 1 or not senders[0].domain):
        return "a Sender header must name exactly one mailbox"
    return None


def author_domains(raw: bytes) -> list[str]:
    """Return the domains of every From mailbox and of Sender, lower case, first From first.

    Call only on a message ``header_problem`` accepted. The first entry is
    the domain the relay signs for; an empty list means the From header
    reads differently to different parsers (refuse the message).
    """
    _lines, body_at = split_header_block(raw)
    headers = _parse_headers(raw[:body_at])
    mailboxes = list(headers["From"].addresses)
    if headers["Sender"] is not None:
        mailboxes += list(headers["Sender"].addresses)
    domains = list(dict.fromkeys(m.domain.lower() for m in mailboxes))
    # APPSEC: the signing key is chosen with ``from_domain`` (parseaddr); a
    # From the two parsers read differently could slip an unchecked domain in.
    if from_domain(raw) != domains[0]:
        return []
    return domains


def has_long_line(raw: bytes) -> bool:
    """Return True if a line of ``raw`` (CRLF endings) is longer than 998 octets."""
    return _LONG_LINE.search(raw) is not None


def received_header(*, helo: str | None, peer_ip: str, hostname: str, protocol: str,
                    queue_id: str, recipients: list[str]) -> bytes:
    """Return an RFC 5321 §4.4 ``Received:`` trace field for a submission (CRLF-ended)."""
    helo_name = _HELO_UNSAFE.sub("_", helo or "unknown")[:255]
    recipient = f"\r\n\tfor <{recipients[0]}>" if len(recipients) == 1 else ""
    stamp = email.utils.format_datetime(datetime.datetime.now(datetime.UTC))
    return (f"Received: from {helo_name} ([{peer_ip}])\r\n\tby {hostname} (SwiftMail) "
            f"with {protocol} id {queue_id}{recipient};\r\n\t{stamp}\r\n").encode()


def local_received_header(*, hostname: str, queue_id: str) -> bytes:
    """Return the ``Received:`` trace field for mail handed over in-process."""
    stamp = email.utils.format_datetime(datetime.datetime.now(datetime.UTC))
    return f"Received: by {hostname} (SwiftMail) with local id {queue_id};\r\n\t{stamp}\r\n".encode()


def complete_headers(raw: bytes, *, trace: bytes, message_id_domain: str) -> bytes:
    """Prepend ``trace``, add Date and Message-ID when missing, drop Bcc.

    ``raw`` has CRLF line endings and passed ``header_problem``. Missing
    fields go at the end of the header block, as Postfix's cleanup adds them.
    """
    lines, body_at = split_header_block(raw)
    kept: list[bytes] = []
    names: set[bytes] = set()
    dropping = False
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        name = line.partition(b":")[0].strip().lower()
        names.add(name)
        dropping = name == b"bcc"  # APPSEC: Bcc recipients stay invisible to the others
        if not dropping:
            kept.append(line)
    if b"date" not in names:
        stamp = email.utils.format_datetime(datetime.datetime.now(datetime.UTC))
        kept.append(f"Date: {stamp}".encode())
    if b"message-id" not in names:
        kept.append(f"Message-ID: {email.utils.make_msgid(domain=message_id_domain)}".encode())
    block = b"".join(line + b"\r\n" for line in kept)
    return trace + block + b"\r\n" + raw[body_at:]
