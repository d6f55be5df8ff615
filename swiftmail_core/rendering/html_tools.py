"""Compile-time work on a template's HTML source, done once per campaign.

Jinja constructs are first swapped for placeholders (``protect``) so the
HTML can be inspected and transformed without breaking them: tracked links
are rewritten to a marker (``link_slots``), a footer, preheader and open pixel
are inserted, CSS is inlined with ``css-inline`` and a plain-text version is
derived, all on the template, never per recipient. Block tags
(``{% for %}``) become HTML comments while inlining, because the HTML parser
keeps comments in place inside tables where it would move text.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from html.parser import HTMLParser

import css_inline

OPEN, CLOSE = "\ue000", "\ue001"
_PLACEHOLDER = re.compile(OPEN + r"(\d+)" + CLOSE)
_COMMENT_PLACEHOLDER = re.compile(r"<!--" + OPEN + r"(\d+)" + CLOSE + r"-->")
_JINJA = re.compile(
    r"\{%-?\s*raw\s*-?%\}.*?\{%-?\s*endraw\s*-?%\}|\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}",
    re.DOTALL,
)
_TAG = re.compile(r"<[a-zA-Z][^>]*>")
_A_TAG = re.compile(r"<a\b[^>]*>", re.IGNORECASE)
_ATTRIBUTE = re.compile(
    r"""([^\s"'>/=]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?"""
)
_QUOTED = re.compile(r""""[^"]*"|'[^']*'""")
_BODY_OPEN = re.compile(r"<body\b[^>]*>", re.IGNORECASE)
_BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)
_NEEDS_INLINING = re.compile(r"<style\b|<link\b", re.IGNORECASE)

_INLINER = css_inline.CSSInliner(
    # APPSEC: never fetch stylesheets named by a tenant's template (SSRF, file reads).
    load_remote_stylesheets=False,
    keep_at_rules=True,
)


class Protected:
    """HTML with Jinja constructs swapped for numbered placeholders."""

    def __init__(self, source: str) -> None:
        self.originals: list[str] = []
        out: list[str] = []
        in_tag = False
        position = 0
        for match in _JINJA.finditer(source):
            text = source[position : match.start()]
            opened, closed = text.rfind("<"), text.rfind(">")
            if opened != closed:
                in_tag = opened > closed
            out.append(text)
            construct = match.group(0)
            is_block = not construct.startswith("{{")
            out.append(self.placeholder(construct, comment=is_block and not in_tag))
            position = match.end()
        out.append(source[position:])
        self.html = "".join(out)

    def placeholder(self, construct: str, *, comment: bool = False) -> str:
        """Register ``construct`` and return its placeholder."""
        self.originals.append(construct)
        mark = f"{OPEN}{len(self.originals) - 1}{CLOSE}"
        return f"<!--{mark}-->" if comment else mark

    def protect_snippet(self, snippet: str) -> str:
        """Return SwiftMail's own HTML ``snippet`` with its Jinja protected."""
        return _JINJA.sub(lambda match: self.placeholder(match.group(0)), snippet)

    def restore(self, text: str) -> str:
        """Put the original Jinja constructs back into ``text``."""
        originals = self.originals
        text = _COMMENT_PLACEHOLDER.sub(lambda m: originals[int(m.group(1))], text)
        return _PLACEHOLDER.sub(lambda m: originals[int(m.group(1))], text)

    def placeholders_only_in_values(self) -> bool:
        """True when no placeholder sits in a tag outside a quoted attribute value."""
        for tag in _TAG.finditer(self.html):
            if OPEN in _QUOTED.sub("", tag.group(0)):
                return False
        return True


def _attributes(tag: str) -> dict[str, tuple[str, int, int]]:
    """Return ``name -> (raw value, start, end)`` for a tag's attributes."""
    found: dict[str, tuple[str, int, int]] = {}
    inner_start = tag.find(" ")
    if inner_start < 0:
        return found
    for match in _ATTRIBUTE.finditer(tag, inner_start):
        name = match.group(1).lower()
        for group in (2, 3, 4):
            if match.group(group) is not None:
                found.setdefault(name, (match.group(group), match.start(group), match.end(group)))
                break
        else:
            found.setdefault(name, ("", match.end(), match.end()))
    return found


def _trackable(tag: str) -> tuple[str, int, int] | None:
    attributes = _attributes(tag)
    if "href" not in attributes or "data-no-track" in attributes:
        return None
    if "notrack" in attributes.get("class", ("", 0, 0))[0].split():
        return None
    raw, start, end = attributes["href"]
    if OPEN in raw:  # a templated URL: not a fixed destination, left alone
        return None
    url = html.unescape(raw).strip()
    if not re.match(r"https?://", url, re.IGNORECASE):
        return None  # mailto:, tel:, anchors... stay as written
    return url, start, end


def links_in(source_html: str) -> list[str]:
    """Return the trackable link URLs of a template, unique, in order.

    Trackable: an ``<a href>`` with a fixed http(s) URL, without a
    ``data-no-track`` attribute or a ``notrack`` class. Register each in the
    ``links`` table and pass ``{url: id}`` to ``CampaignRenderer``.
    """
    protected = Protected(source_html)
    urls: dict[str, None] = {}
    for match in _A_TAG.finditer(protected.html):
        found = _trackable(match.group(0))
        if found:
            urls.setdefault(found[0], None)
    return list(urls)


def rewrite_links(
    protected: Protected, link_ids: dict[str, int], marker: Callable[[int], str]
) -> None:
    """Point every trackable link at ``marker(ID)``, filled with its per-message URL."""

    def replace(match: re.Match[str]) -> str:
        tag = match.group(0)
        found = _trackable(tag)
        if not found:
            return tag
        url, start, end = found
        if url not in link_ids:
            raise ValueError(f"link {url!r} has no id: register links_in(html) first")
        mark = protected.placeholder(marker(link_ids[url]))
        return tag[:start] + mark + tag[end:]

    protected.html = _A_TAG.sub(replace, protected.html)


def insert_after_body_open(protected: Protected, snippet: str) -> None:
    """Insert ``snippet`` right after ``<body>`` (or at the very start)."""
    match = _BODY_OPEN.search(protected.html)
    at = match.end() if match else 0
    protected.html = protected.html[:at] + snippet + protected.html[at:]


def insert_before_body_close(protected: Protected, snippet: str) -> None:
    """Insert ``snippet`` right before ``</body>`` (or at the very end)."""
    matches = list(_BODY_CLOSE.finditer(protected.html))
    at = matches[-1].start() if matches else len(protected.html)
    protected.html = protected.html[:at] + snippet + protected.html[at:]


def inline_css_once(protected: Protected) -> bool:
    """Inline CSS into the protected template; False when it must be per message.

    Verified: every placeholder must come back exactly once and in order, and
    none may sit in a tag outside an attribute value, else the template is
    left as is and the caller inlines each rendered message instead.
    """
    if not _NEEDS_INLINING.search(protected.html):
        return True
    if not protected.placeholders_only_in_values():
        return False
    inlined = _INLINER.inline(protected.html)
    if _PLACEHOLDER.findall(inlined) != _PLACEHOLDER.findall(protected.html):
        return False
    if _JINJA.search(inlined):  # e.g. "&#123;&#123;" decoded to "{{" by the parser
        return False
    protected.html = inlined
    return True


def inline_css(rendered_html: str) -> str:
    """Inline CSS into one rendered message (the slow fallback path)."""
    if not _NEEDS_INLINING.search(rendered_html):
        return rendered_html
    return _INLINER.inline(rendered_html)


# HTML to text -------------------------------------------------------------

_BLOCK = {
    "p", "div", "table", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol",
    "blockquote", "section", "article", "header", "footer", "hr", "center", "pre",
}
_SKIP = {"style", "script", "head", "title"}


class _TextMaker(HTMLParser):
    def __init__(self, originals: list[str]) -> None:
        super().__init__(convert_charrefs=True)
        self.originals = originals
        self.out: list[str] = []
        self.skipping = 0
        self.hrefs: list[str | None] = []
        self.link_text: list[list[str]] = []

    def _emit(self, text: str) -> None:
        (self.link_text[-1] if self.link_text else self.out).append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skipping += 1
        elif tag == "br":
            self._emit("\n")
        elif tag == "li":
            self._emit("\n- ")
        elif tag in _BLOCK or tag == "td":
            self._emit("\n\n" if tag in _BLOCK else " ")
        elif tag == "a":
            self.hrefs.append(dict(attrs).get("href"))
            self.link_text.append([])
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self._emit(alt)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag == "a" and self.hrefs:
            href, label = self.hrefs.pop(), "".join(self.link_text.pop()).strip()
            label = " ".join(label.split())
            if href and not href.startswith("#") and href != label:
                self._emit(f"{label} ( {href} )" if label else href)
            else:
                self._emit(label)
        elif tag in _BLOCK:
            self._emit("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self._emit(data)
        elif OPEN in data:
            # Skipped content (<style>, <title>...) keeps its {% %} tags, so an
            # {% if %} opened inside and closed outside still pairs up.
            for number in _PLACEHOLDER.findall(data):
                if not self.originals[int(number)].startswith("{{"):
                    self._emit(f"{OPEN}{number}{CLOSE}")

    def handle_comment(self, data: str) -> None:
        if _PLACEHOLDER.fullmatch(data):  # a protected {% block %} tag
            self._emit(data)


def html_to_text(protected: Protected) -> str:
    """Derive readable plain text from protected template HTML.

    Returns protected text: Jinja constructs are still placeholders, and
    every literal ``{`` (say from ``&#123;``) is one too, for ``{{ '{' }}``,
    so decoded text can never become template syntax.
    """
    text = _html_to_text(protected.html, protected.originals)
    if "{" in text:
        text = text.replace("{", protected.placeholder("{{ '{' }}"))
    return text


def _html_to_text(protected_html: str, originals: list[str]) -> str:
    maker = _TextMaker(originals)
    maker.feed(protected_html)
    maker.close()
    lines = []
    for line in "".join(maker.out).split("\n"):
        lines.append(" ".join(line.split()))
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return text + "\n"
