"""What a submitted message must be, and what the relay adds, before it is spooled.

The relay emits every message with CRLF line endings (the SMTP client turns
a bare LF or a bare CR into CRLF), so the checks here read lines the same
way: a header line ends at LF or CRLF. ``canonical_line_endings`` is applied
once, before signing, so the signed bytes are the bytes sent; a bare CR in a
body would otherwise be signed as is and arrive as a line break, and both
DKIM verifiers report the body altered.

APPSEC: ``check_headers`` refuses header injection: NUL bytes, a bare CR,
lines that are neither a field nor a continuation, duplicated single fields
(a second From hidden behind a bare LF included), and a From with several
mailboxes but no Sender; it returns every domain the recipient will see as
the author, so each one is checked, not only the first. Everything here is
plain CPU work on up to ``max_message_size`` bytes: the listener runs it in
a worker thread (``check_submission``).
"""

from __future__ import annotations

import dataclasses
import datetime
import email.policy
import email.utils
import re
from collections import Counter
from email.errors import MessageError
from email.utils import parseaddr

from swiftmail_relay import dkim

MAX_LINE_OCTETS = 998  # RFC 5322 §2.1.1, CRLF excluded
SINGLE_HEADERS = ("from", "sender", "to", "cc", "subject", "date", "message-id", "reply-to")
LINE_TOO_LONG = "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)"
_HEADER_NAME = re.compile(rb"^[!-9;-~]+$")
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_HELO_UNSAFE = re.compile(r"[^A-Za-z0-9.\-\[\]:_]")
_ADDRESS_HEADER = email.policy.default.header_factory


@dataclasses.dataclass(frozen=True)
class HeaderCheck:
    """What the header block says: why it is refused, or its author domains."""

    problem: str | None
    author_domains: list[str]


@dataclasses.dataclass(frozen=True)
class CheckedMessage:
    """A submitted message after ``check_submission``."""

    refusal: str | None  # the SMTP reply refusing it, or None
    raw: bytes  # CRLF line endings throughout
    author_domains: list[str]  # From mailboxes, then Sender; the first is signed for


def ascii_domain(domain: str) -> str | None:
    """Return ``domain`` lower case in its ASCII (IDNA A-label) form, or None if it has none.

    Sending domains are stored in ASCII, so a From written with Unicode labels
    (RFC 6532) is compared, signed for and looked up in that form.
    """
    domain = domain.strip().rstrip(".")
    if domain.isascii():
        return domain.lower() or None
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None


def from_domain(raw: bytes) -> str | None:
    """Return the domain of the From header of a message, lower case."""
    header_block, _ = dkim.split_message(raw)
    for name, value in dkim.parse_headers(header_block):
        if name.strip().lower() == b"from":
            address = parseaddr(value.decode("utf-8", "replace").replace("\r\n", ""))[1]
            return ascii_domain(address.rpartition("@")[2])
    return None


def canonical_line_endings(raw: bytes) -> bytes:
    """Return ``raw`` with every line break (CRLF, bare LF, bare CR) as CRLF."""
    pairs = raw.count(b"\r\n")
    if raw.count(b"\r") == pairs and raw.count(b"\n") == pairs:
        return raw  # no bare CR or LF (counting runs at C speed; most mail takes this path)
    return _LINE_BREAK.sub(b"\r\n", raw)


def has_long_line(raw: bytes) -> bool:
    """Return True if a line of ``raw`` (CRLF endings) is longer than 998 octets."""
    if len(raw) <= MAX_LINE_OCTETS:
        return False
    return max(map(len, raw.split(b"\r\n"))) > MAX_LINE_OCTETS


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


def _fields(lines: list[bytes]) -> list[tuple[str, str]] | str:
    """Return (lower-case name, unfolded value) per field, or why the block is malformed."""
    fields: list[tuple[str, list[bytes]]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not fields:
                return "malformed header line"
            fields[-1][1].append(line)
            continue
        name, sep, value = line.partition(b":")
        if not sep or not _HEADER_NAME.match(name):
            return "malformed header line"
        fields.append((name.decode("ascii").lower(), [value]))
    # 8-bit text is read as UTF-8 (RFC 6532), as ``from_domain`` reads it.
    return [(name, b"".join(parts).decode("utf-8", "surrogateescape")) for name, parts in fields]


def check_headers(raw: bytes) -> HeaderCheck:
    """Check a message's header block and list its author domains.

    From and Sender are read with the standard library's RFC 5322 address
    parser (``email.headerregistry``), once.
    """
    lines, body_at = split_header_block(raw)
    if b"\x00" in raw[:body_at]:
        return HeaderCheck("NUL byte in the header", [])
    if any(b"\r" in line for line in lines):
        return HeaderCheck("bare CR in the header", [])
    fields = _fields(lines)
    if isinstance(fields, str):
        return HeaderCheck(fields, [])
    counts = Counter(name for name, _ in fields)
    for name in SINGLE_HEADERS:
        if counts[name] > 1:
            return HeaderCheck(f"more than one {name} header", [])
    if counts["from"] != 1:
        return HeaderCheck("exactly one From header is required", [])
    values = dict(fields)
    try:
        authors = _ADDRESS_HEADER("from", values["from"]).addresses
        senders = _ADDRESS_HEADER("sender", values["sender"]).addresses if "sender" in values \
            else ()
    except (MessageError, AttributeError, IndexError, TypeError, ValueError):
        return HeaderCheck("malformed From or Sender header", [])
    if not authors or any(not a.domain for a in authors):
        return HeaderCheck("no usable From address", [])
    if len(authors) > 1 and not senders:
        return HeaderCheck("a From header with more than one mailbox needs a Sender header", [])
    if "sender" in values and (len(senders) != 1 or not senders[0].domain):
        return HeaderCheck("a Sender header must name exactly one mailbox", [])
    ascii_domains = [ascii_domain(m.domain) for m in (*authors, *senders)]
    if None in ascii_domains:
        return HeaderCheck("a From or Sender domain is not a valid domain name", [])
    domains = list(dict.fromkeys(d for d in ascii_domains if d))
    # APPSEC: the signing key is chosen with ``from_domain`` (parseaddr); a
    # From the two parsers read differently could slip an unchecked domain in.
    if from_domain(raw) != domains[0]:
        return HeaderCheck("the From header is ambiguous", [])
    return HeaderCheck(None, domains)


def header_problem(raw: bytes) -> str | None:
    """Return why a message's header block is unacceptable, or None."""
    return check_headers(raw).problem


def author_domains(raw: bytes) -> list[str]:
    """Return the domains of every From mailbox and of Sender, lower-case ASCII (IDNA), first From first.

    Empty when the header block is refused. The first entry is the domain
    the relay signs for.
    """
    return check_headers(raw).author_domains


def check_submission(raw: bytes) -> CheckedMessage:
    """Check a submitted message and make its line endings CRLF (blocking: use a thread).

    Headers are checked before line endings change (a bare CR in a header is
    refused, not repaired); the body's are canonicalised once, before signing.
    """
    headers = check_headers(raw)
    if headers.problem:
        return CheckedMessage(f"554 5.6.0 Message refused: {headers.problem}", raw, [])
    raw = canonical_line_endings(raw)
    if has_long_line(raw):
        return CheckedMessage(LINE_TOO_LONG, raw, [])
    return CheckedMessage(None, raw, headers.author_domains)


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
