"""Header values: injection checks, RFC 2047 encoding, folding, addresses.

APPSEC: every header-bound value passes ``refuse_line_breaks`` (CR, LF and
NUL are refused with an error naming the field), and every value written by
the fast path is encoded here, so no tenant or contact data can start a new
header or a MIME part.
"""

from __future__ import annotations

import base64
import re

from swiftmail_core.errors import ValidationError

CRLF = "\r\n"
_FORBIDDEN = re.compile(r"[\r\n\0]")
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*\Z")
_ATOM_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]*\Z")
_HEADER_NAME = re.compile(r"[!-9;-~]+\Z")
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+\Z")
_DOMAIN = re.compile(r"(?=.{1,253}\Z)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{2,63}\Z")
_WORD_BYTES = 39  # 39 bytes -> 52 base64 chars; "=?utf-8?b?" + 52 + "?=" = 64

# Headers SwiftMail writes itself; a campaign's custom headers may not set them.
RESERVED_HEADERS = frozenset(
    name.lower()
    for name in (
        "From", "To", "Cc", "Bcc", "Subject", "Date", "Message-ID", "MIME-Version",
        "Content-Type", "Content-Transfer-Encoding", "Content-Disposition",
        "List-Unsubscribe", "List-Unsubscribe-Post", "Return-Path", "Sender",
        "Reply-To", "Feedback-ID", "DKIM-Signature", "Received", "Authentication-Results",
        "ARC-Seal", "ARC-Message-Signature", "ARC-Authentication-Results",
    )
)


def refuse_line_breaks(field: str, value: str) -> None:
    """Raise ValidationError naming ``field`` if ``value`` has CR, LF or NUL."""
    if _FORBIDDEN.search(value):
        raise ValidationError.for_field(
            field, "must not contain line breaks (CR, LF) or NUL characters"
        )


def _encoded_words(value: str) -> list[str]:
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for char in value:
        width = len(char.encode("utf-8"))
        if size + width > _WORD_BYTES:
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(char)
        size += width
    if chunk:
        words.append("".join(chunk))
    return [
        "=?utf-8?b?" + base64.b64encode(word.encode("utf-8")).decode("ascii") + "?="
        for word in words
    ]


def _fold(name: str, value: str) -> str:
    """Fold an ASCII value at spaces so lines stay near 78 characters."""
    if len(name) + 2 + len(value) <= 78 or " " not in value:
        return value
    lines, line_length, pieces = [], len(name) + 2, value.split(" ")
    current = pieces[0]
    line_length += len(current)
    for piece in pieces[1:]:
        if line_length + 1 + len(piece) > 78 and current.strip():
            lines.append(current)
            current, line_length = " " + piece, 1 + len(piece)
        else:
            current += " " + piece
            line_length += 1 + len(piece)
    lines.append(current)
    return CRLF.join(lines)


def encode_unstructured(name: str, value: str) -> str:
    """Return ``value`` ready to follow ``name: `` (RFC 2047 when needed)."""
    if (
        _PRINTABLE_ASCII.match(value)
        and "=?" not in value
        and value == value.strip()
        and (len(value) < 900 or max(map(len, value.split(" "))) < 900)  # RFC 5322: 998
    ):
        return _fold(name, value)
    return (CRLF + " ").join(_encoded_words(value))


def ascii_domain(field: str, domain: str) -> str:
    """Return ``domain`` in ASCII (IDNA) lower case, or raise naming ``field``."""
    return _encode_domain(domain.strip(), field)


def _encode_domain(domain: str, field: str) -> str:
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError as ex:
        raise ValidationError.for_field(field, f"invalid domain {domain!r}") from ex
    if not _DOMAIN.match(ascii_domain):
        raise ValidationError.for_field(field, f"invalid domain {domain!r}")
    return ascii_domain.lower()


def normalise_address(field: str, address: str) -> str:
    """Return an ASCII ``local@domain`` or raise ValidationError naming ``field``."""
    refuse_line_breaks(field, address)
    address = address.strip()
    local, at, domain = address.rpartition("@")
    if not at or not local or len(local) > 64 or not _LOCAL_PART.match(local):
        raise ValidationError.for_field(field, f"not a valid email address: {address!r}")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise ValidationError.for_field(field, f"not a valid email address: {address!r}")
    return f"{local}@{_encode_domain(domain, field)}"


def format_address(field: str, display_name: str, address: str) -> str:
    """Return ``Name <addr>`` encoded for a header (name quoted or RFC 2047)."""
    refuse_line_breaks(field, display_name)
    address = normalise_address(field, address)
    display_name = display_name.strip()
    if not display_name:
        return address
    if _ATOM_PHRASE.match(display_name) and "=?" not in display_name:
        phrase = display_name
    elif _PRINTABLE_ASCII.match(display_name) and "=?" not in display_name:
        phrase = '"' + display_name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    else:
        phrase = (CRLF + " ").join(_encoded_words(display_name))
    return f"{phrase} <{address}>"


def parse_reply_to(field: str, value: str) -> tuple[str, str]:
    """Split ``Name <addr>`` or ``addr`` into (name, address), validated."""
    refuse_line_breaks(field, value)
    value = value.strip()
    match = re.fullmatch(r"(.*?)\s*<([^<>]+)>", value)
    if match:
        name = match.group(1).strip().strip('"')
        return name, normalise_address(field, match.group(2))
    return "", normalise_address(field, value)


def check_custom_headers(headers: dict[str, str] | None) -> list[tuple[str, str]]:
    """Validate a campaign's custom headers; errors name ``headers.<Name>``."""
    checked: list[tuple[str, str]] = []
    for name, value in (headers or {}).items():
        field = f"headers.{name}"
        refuse_line_breaks(field, str(name))
        if not _HEADER_NAME.match(str(name)):
            raise ValidationError.for_field(field, "header names are printable ASCII without ':'")
        if name.lower() in RESERVED_HEADERS:
            raise ValidationError.for_field(field, "set by SwiftMail; cannot be overridden")
        if not isinstance(value, str):
            raise ValidationError.for_field(field, "header values must be strings")
        refuse_line_breaks(field, value)
        checked.append((name, value))
    return checked


def header_line(name: str, value: str) -> str:
    """Return one encoded ``Name: value`` line with CRLF."""
    return f"{name}: {encode_unstructured(name, value)}{CRLF}"
