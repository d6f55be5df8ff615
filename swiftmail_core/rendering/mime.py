"""The MIME skeleton of a campaign, built once, and per-message splicing.

Every message is ``multipart/alternative`` (text/plain, then text/html),
both parts UTF-8 and quoted-printable, CRLF line endings; a campaign with no
HTML is a single text/plain body. The boundary is
``=_sm_<random hex>``: quoted-printable output never contains ``=_`` (an
``=`` is always followed by two hex digits or a line break), so the boundary
can never occur inside a part and no per-message check is needed.

``build_reference`` builds the same message with the standard library's
``EmailMessage`` (used when a compose hook must see the message, and as the
reference in tests and the benchmark).
"""

from __future__ import annotations

import binascii
import secrets
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP

CRLF = b"\r\n"
SOFT_BREAK = b"=\r\n"  # a quoted-printable soft line break: joins without a newline


def new_boundary() -> str:
    """Return a boundary that quoted-printable content can never contain."""
    return "=_sm_" + secrets.token_hex(16)


def quoted_printable(text: str) -> bytes:
    """Encode ``text`` as UTF-8 quoted-printable with CRLF line endings."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    encoded = binascii.b2a_qp(text.encode("utf-8"), istext=True)
    if b"=20\n" in encoded or b"=09\n" in encoded:
        encoded = _rewrap_encoded_whitespace(encoded)
    return encoded.replace(b"\n", CRLF)


def _rewrap_encoded_whitespace(encoded: bytes) -> bytes:
    """Keep lines within 76 characters where ``b2a_qp`` does not.

    NOTE: CPython's encoder writes whitespace before a line break as ``=20``
    or ``=09`` without checking the line length, so such a line can reach
    78 characters (RFC 2045 allows 76; SpamAssassin's MIME_QP_LONG_LINE
    notices). A soft break goes before the escape on exactly those lines.
    """
    lines = encoded.split(b"\n")
    for number, line in enumerate(lines):
        if len(line) > 76:
            lines[number] = line[:-3] + b"=\n" + line[-3:]
    return b"\n".join(lines)


_SEPARATOR = "\0"  # encodes as "=00"; runs holding a NUL are encoded one by one


def quoted_printable_many(texts: list[str]) -> list[bytes]:
    """Encode several texts with one encoder call, each as if it started a line.

    The texts are joined with NUL, encoded once and split at ``=00``: an
    ``=`` in the input is always encoded as ``=3D``, so ``=00`` can only be
    a separator. Each piece's lines are at most 76 characters, and escapes
    are never split, so each piece is valid quoted-printable on its own.
    A text that occurs more than once (a tracked link's URL in every place
    the link appears, a first name) is encoded once.
    """
    unique = dict.fromkeys(texts)
    if len(unique) == len(texts):
        return _encode_pieces(texts)
    encoded = dict(zip(unique, _encode_pieces(list(unique)), strict=True))
    return [encoded[text] for text in texts]


def _encode_pieces(texts: list[str]) -> list[bytes]:
    if any(_SEPARATOR in text for text in texts):
        return [joinable_quoted_printable(text) for text in texts]
    encoded = quoted_printable(_SEPARATOR.join(texts)).split(b"=00")
    if len(encoded) != len(texts):  # cannot happen; stay correct regardless
        return [joinable_quoted_printable(text) for text in texts]
    encoded[-1] = _room_for_soft_break(encoded[-1])  # the others end before "=00"
    return encoded


def joinable_quoted_printable(text: str) -> bytes:
    """Encode ``text`` so a soft line break (``=``) can follow its last line."""
    return _room_for_soft_break(quoted_printable(text))


def _room_for_soft_break(encoded: bytes) -> bytes:
    """Move the last unit of a full 76-character last line to a new line."""
    start = encoded.rfind(b"\n") + 1
    if len(encoded) - start < 76:
        return encoded
    cut = len(encoded) - 3 if encoded[-3:-2] == b"=" else len(encoded) - 1
    return encoded[:cut] + SOFT_BREAK + encoded[cut:]


class Skeleton:
    """Pre-encoded bytes of everything that is the same in every message."""

    def __init__(self, static_headers: str, boundary: str, *, text_only: bool = False) -> None:
        self.boundary = boundary
        self.text_only = text_only
        if text_only:  # a single text/plain body, no multipart
            self.head_tail = (
                static_headers
                + "MIME-Version: 1.0\r\n"
                + 'Content-Type: text/plain; charset="utf-8"\r\n'
                + "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            ).encode("ascii")
        else:
            self.head_tail = (
                static_headers
                + "MIME-Version: 1.0\r\n"
                + f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
            ).encode("ascii")
        part = (
            "--{b}\r\nContent-Type: text/{t}; charset=\"utf-8\"\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        )
        self.text_head = part.format(b=boundary, t="plain").encode("ascii")
        self.html_head = ("\r\n" + part.format(b=boundary, t="html")).encode("ascii")
        self.closing = f"\r\n--{boundary}--\r\n".encode("ascii")

    def splice(self, per_message_headers: bytes, text: bytes, html: bytes) -> bytes:
        """Return the whole message from headers and quoted-printable parts."""
        if self.text_only:
            return b"".join((per_message_headers, self.head_tail, text))
        return b"".join(
            (
                per_message_headers,
                self.head_tail,
                self.text_head,
                text,
                self.html_head,
                html,
                self.closing,
            )
        )


def build_reference(
    headers: list[tuple[str, str | Address]], text: str, html: str | None
) -> EmailMessage:
    """Build the message with ``EmailMessage`` from decoded header values.

    ``html`` None makes a single text/plain message.
    """
    message = EmailMessage(policy=SMTP)
    for name, value in headers:
        message[name] = value
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message
