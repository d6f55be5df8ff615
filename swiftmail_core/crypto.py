"""Encryption at rest and signed tokens, keyed from ``secret_key``.

Separate keys are derived (HKDF) for each purpose so that a token signature
can never be replayed as a ciphertext key or the other way round.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from swiftmail_core.errors import ConfigurationError, ValidationError


@functools.lru_cache(maxsize=32)
def derive_key(secret_key: str, purpose: str) -> bytes:
    """Derive a 32-byte key for ``purpose`` from the install's secret key."""
    if not secret_key or len(secret_key) < 32:
        raise ConfigurationError(
            "setting 'secret_key' must be at least 32 characters: run `swiftmail init` "
            "or set SWIFTMAIL_SECRET_KEY"
        )
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"swiftmail", info=purpose.encode()
    ).derive(secret_key.encode())


@functools.lru_cache(maxsize=8)
def _fernet(secret_key: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(derive_key(secret_key, "encryption-at-rest")))


def encrypt(secret_key: str, plaintext: bytes) -> bytes:
    """Encrypt and authenticate ``plaintext`` (Fernet: AES-128-CBC + HMAC-SHA256)."""
    return _fernet(secret_key).encrypt(plaintext)


def decrypt(secret_key: str, ciphertext: bytes) -> bytes:
    """Decrypt what ``encrypt`` produced; a changed secret_key is named as the cause."""
    try:
        return _fernet(secret_key).decrypt(bytes(ciphertext))
    except InvalidToken as ex:
        raise ConfigurationError(
            "cannot decrypt a stored secret: was setting 'secret_key' changed?"
        ) from ex


def sign(secret_key: str, purpose: str, message: bytes) -> bytes:
    """Return an HMAC-SHA256 of ``message`` under the key for ``purpose``."""
    return hmac.new(derive_key(secret_key, purpose), message, hashlib.sha256).digest()


def verify(secret_key: str, purpose: str, message: bytes, signature: bytes) -> None:
    """Raise ValidationError unless ``signature`` is ``message``'s, in constant time."""
    if not hmac.compare_digest(sign(secret_key, purpose, message), signature):
        raise ValidationError.for_field("token", "signature does not match")
