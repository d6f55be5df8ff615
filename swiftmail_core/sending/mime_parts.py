"""Split a rendered message into what HTTP mail APIs take as fields."""

from __future__ import annotations

import dataclasses
from email import policy
from email.parser import BytesParser
from email.utils import parseaddr

#: Headers an HTTP API sets itself from its own fields (never passed through).
API_OWNED = frozenset({
    "from", "to", "cc", "bcc", "subject", "reply-to", "content-type",
    "content-transfer-encoding", "mime-version", "date", "received", "dkim-signature",
})

_PARSER = BytesParser(policy=policy.default)


@dataclasses.dataclass(frozen=True)
class MessageParts:
    """The fields of one rendered message."""

    from_name: str
    from_email: str
    reply_to: str
    subject: str
    text: str
    html: str
    headers: tuple[tuple[str, str], ...]

    def content_key(self) -> tuple[object, ...]:
        """Return what must be equal for two messages to share one API request."""
        return (self.from_name, self.from_email, self.reply_to, self.text, self.html)


def split_message(raw: bytes) -> MessageParts:
    """Parse raw MIME into sender, subject, text, html and passthrough headers."""
    message = _PARSER.parsebytes(raw)
    from_name, from_email = parseaddr(str(message.get("From", "")))
    text_part = message.get_body(("plain",))
    html_part = message.get_body(("html",))
    headers = tuple(
        (name, str(value).replace("\r", "").replace("\n", ""))
        for name, value in message.items()
        if name.lower() not in API_OWNED
    )
    return MessageParts(
        from_name=from_name, from_email=from_email,
        reply_to=parseaddr(str(message.get("Reply-To", "")))[1],
        subject=str(message.get("Subject", "")),
        text=text_part.get_content() if text_part is not None else "",
        html=html_part.get_content() if html_part is not None else "",
        headers=headers,
    )
