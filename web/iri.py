"""IRIs to URIs for HTTP headers: non-ASCII becomes UTF-8 percent-escapes.

A ``Location`` header is ASCII (latin-1 at most, which is not what was meant):
a link to ``https://exämple.com/über?q=ü`` or a suppression of ``jörg@x.de``
made a 500 (``Invalid response header``) or a wrong URL. The host is written
in IDNA (punycode), everything else percent-encoded as UTF-8; characters that
are already ASCII, escapes included, are left as they are.
"""

from __future__ import annotations

import urllib.parse

# Everything RFC 3986 allows unescaped in a URI, and "%" so existing escapes survive.
_SAFE = "!#$%&'()*+,/:;=?@[]~-._"


def iri_to_uri(iri: str) -> str:
    """Return ``iri`` as an ASCII URI (IDNA host, UTF-8 percent-escapes elsewhere)."""
    if iri.isascii():
        return iri
    parts = urllib.parse.urlsplit(iri)
    netloc = parts.netloc
    if parts.hostname and not parts.hostname.isascii():
        host = parts.hostname.encode("idna").decode("ascii")
        userinfo = netloc.rpartition("@")[0]
        port = f":{parts.port}" if parts.port else ""
        netloc = (f"{_quote(userinfo)}@" if userinfo else "") + host + port
    return urllib.parse.urlunsplit((
        parts.scheme, _quote(netloc), _quote(parts.path), _quote(parts.query),
        _quote(parts.fragment)))


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe=_SAFE, encoding="utf-8")
