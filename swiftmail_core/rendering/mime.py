"""The MIME skeleton of a campaign, built once, and per-message splicing.

Every message is ``multipart/alternative`` (text/plain, then text/html),
both parts UTF-8 and quoted-printable, CRLF line endings. The boundary is
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
    return binascii.b2a_qp(text.encode("utf-8"), istext=True).replace(b"\n", CRLF)


_SEPARATOR = "\0"  # encodes as "=00"; runs holding a NUL are encoded one by one


def quoted_printable_many(texts: list[str]) -> list[bytes]:
    """Encode several texts with one encoder call, each as if it started a line.

    The texts are joined with NUL, encoded once and split at ``=00``: an
    ``=`` in the input is always encoded as ``=3D``, so ``=00`` can only be
    a separator. Each piece's lines are at most 76 characters, and escapes
    are never split, so each piece is valid quoted-printable on its own.
    """
    if any(_SEPARATOR in text for text in texts):
        return [quoted_printable(text) for text in texts]
    encoded = quoted_printable(_SEPARATOR.join(texts)).split(b"=00")
    if len(encoded) != len(texts):  # cannot happen; stay correct regardless
        return [quoted_printable(text) for text in texts]
    return encoded


class Skeleton:
    """Pre-encoded bytes of everything that is the same in every message."""

    def __init__(self, static_headers: str, boundary: str) -> None:
        self.boundary = boundary
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
    headers: list[tuple[str, str | Address]], text: str, html: str
) -> EmailMessage:
    """Build the message with ``EmailMessage`` from decoded header values."""
    message = EmailMessage(policy=SMTP)
    for name, value in headers:
        message[name] = value
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message
