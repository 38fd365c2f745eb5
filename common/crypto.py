"""Encryption of secrets at rest (destination passwords, keys) with ``SKEIN_SECRET_KEY``.

Fernet gives authenticated encryption (AES-128-CBC + HMAC-SHA256) with a versioned token format,
so a wrong key or tampered bytes are detected rather than decrypted into garbage. Operators set
``SKEIN_SECRET_KEY`` to any string; HKDF turns it into the 32 bytes Fernet needs, with a fixed
``info`` that binds the derived key to this one use.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_HKDF_INFO = b"skein destinations"


class SecretKeyError(ValueError):
    """Stored secrets cannot be decrypted with this key (a different key, or corrupt data)."""


def _fernet(key: str) -> Fernet:
    """A Fernet instance for ``key``; an empty key is refused, it would protect nothing."""
    if not key:
        raise SecretKeyError("SKEIN_SECRET_KEY is empty")
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
        key.encode("utf-8")
    )
    return Fernet(base64.urlsafe_b64encode(derived))


def encrypt(key: str, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` under ``key`` (fresh IV each call, so equal inputs differ)."""
    return _fernet(key).encrypt(plaintext)


def decrypt(key: str, token: bytes) -> bytes:
    """Decrypt what :func:`encrypt` produced; raise :class:`SecretKeyError` if ``key`` is wrong."""
    try:
        return _fernet(key).decrypt(token)
    except InvalidToken:
        raise SecretKeyError(
            "cannot decrypt stored secrets: SKEIN_SECRET_KEY is not the key they were "
            "encrypted with, or the stored bytes are corrupt"
        ) from None
