"""Email validation and normalisation, fast enough for a million rows.

The common case is one compiled-regex match; only addresses that fail it
take the slow path (IDNA for internationalised domains, a precise reason).
Normalising strips surrounding whitespace and lowercases the domain; the
local part keeps its case (uniqueness is on ``lower(email)`` anyway).
"""

from __future__ import annotations

import re

MAX_EMAIL_LENGTH = 254
MAX_LOCAL_LENGTH = 64
_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z][A-Za-z0-9-]{0,61}[A-Za-z0-9]"
EMAIL_PATTERN = re.compile(f"^({_LOCAL})@({_DOMAIN})$")
_UNICODE_LOCAL = re.compile(r"^[^\s@\"(),:;<>\[\\\]]+$")


def normalise_email(value: str) -> tuple[str | None, str | None]:
    """Return ``(normalised, None)`` or ``(None, reason)`` for one address."""
    email = value.strip()
    match = EMAIL_PATTERN.match(email)
    if match is not None:
        local, domain = match.groups()
        if len(email) > MAX_EMAIL_LENGTH:
            return None, f"email is longer than {MAX_EMAIL_LENGTH} characters"
        if len(local) > MAX_LOCAL_LENGTH:
            return None, f"email's local part is longer than {MAX_LOCAL_LENGTH} characters"
        return f"{local}@{domain.lower()}", None
    return _slow_path(email)


def _slow_path(email: str) -> tuple[str | None, str | None]:
    if not email:
        return None, "email is empty"
    if email.count("@") != 1:
        return None, "email must contain exactly one @"
    local, domain = email.split("@")
    if not local:
        return None, "email has nothing before the @"
    if not domain:
        return None, "email has no domain after the @"
    if not domain.isascii():
        try:
            ascii_domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return None, "email's domain is not a valid internationalised domain name"
        if _UNICODE_LOCAL.match(local) and not local.startswith(".") and ".." not in local:
            candidate = f"{local}@{ascii_domain}"
            if EMAIL_PATTERN.match(f"x@{ascii_domain}") and len(candidate) <= MAX_EMAIL_LENGTH:
                return f"{local}@{ascii_domain.lower()}", None
        return None, "email is not a valid address"
    if "." not in domain:
        return None, "email's domain has no dot"
    if any(char.isspace() for char in email):
        return None, "email contains whitespace"
    return None, "email is not a valid address"


def cell_problem(row: list[str], max_length: int, may_contain_nul: bool) -> str | None:
    """Return why a row's cells cannot be stored (too long, a NUL), or None.

    ``may_contain_nul`` comes from ``CsvSource.may_contain_nul``: rows are searched
    for NUL only once the file has shown one, keeping the common path cheap.
    """
    if max(map(len, row)) > max_length:
        return f"a cell is longer than {max_length} characters"
    if may_contain_nul and any("\x00" in cell for cell in row):
        return "a cell contains a NUL character"
    return None
