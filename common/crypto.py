"""Encryption of secrets at rest (destination secrets, integration configs) with the keyring in
``SKEIN_SECRET_KEY``.

**The keyring.** ``SKEIN_SECRET_KEY`` is ``ID:KEY[,ID:KEY...]``: each KEY 32 random bytes in
base64 (``python -c "import os, base64; print(base64.b64encode(os.urandom(32)).decode())"``),
each ID a short name (letters, digits, ``-_.``). The last key encrypts; every key decrypts, so
a new key is added at the end, ``skein secrets rotate`` re-encrypts everything under it, and the
old one can then be dropped. A value that is not a keyring (the local stack's placeholder, or a
passphrase from before keyrings) is one legacy key: HKDF of the string, id ``legacy``; such a
passphrase can also stay in a ring as ``legacy:<passphrase>`` while rotation moves its values
off it. ``SKEIN_ENV=production`` refuses a ring that holds one (``weak_key_problem``).

**The ciphertext** is AES-256-GCM: ``sk1:<key id>:`` + 12-byte nonce + ciphertext and tag. The
key is derived per purpose (HKDF-SHA256 of the keyring key, ``info = "skein <purpose>"``:
destination secrets, integration configs and hook signing secrets each get their own), and the
associated data is ``<purpose>/<client id>``: a value copied to another client's row, or from a
destination to an integration, fails to decrypt with a clear error instead of serving the wrong
tenant.

Values written before keyrings (Fernet under the legacy derivation) still decrypt, with any key
of the ring treated as a passphrase, until ``skein secrets rotate`` rewrites them.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_MAGIC = b"sk1:"
_LEGACY_INFO = b"skein destinations"
_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}")
PURPOSES = ("destination", "integration", "hook")


class SecretKeyError(ValueError):
    """Stored secrets cannot be decrypted with this key (a different key, or corrupt data)."""


@dataclass(frozen=True)
class Key:
    id: str
    material: bytes  # 32 bytes; for the legacy passphrase, its HKDF


def keyring(value: str) -> list[Key]:
    """The keys of ``SKEIN_SECRET_KEY``, oldest first (the last encrypts). An entry
    ``legacy:<passphrase>`` is a passphrase from before keyrings (its HKDF, id ``legacy``), so
    values sealed under it still open while ``skein secrets rotate`` moves them to a new key;
    a value that is no keyring at all is one such passphrase."""
    if not value:
        raise SecretKeyError("SKEIN_SECRET_KEY is empty")
    keys: list[Key] = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        key_id, sep, encoded = entry.partition(":")
        if sep and key_id == "legacy" and encoded:
            keys.append(_legacy(encoded))
            continue
        try:
            material = base64.b64decode(encoded, validate=True) if sep else b""
        except (binascii.Error, ValueError):
            material = b""
        if not sep or not _ID.fullmatch(key_id) or not material:
            return [_legacy(value)]  # not a keyring: a passphrase
        if len(material) != 32:
            raise SecretKeyError(
                f"SKEIN_SECRET_KEY: key {key_id!r} is {len(material)} bytes; keys are 32 random "
                "bytes in base64"
            )
        keys.append(Key(key_id, material))
    if len({k.id for k in keys}) != len(keys):
        raise SecretKeyError("SKEIN_SECRET_KEY: two keys share an id")
    return keys


def weak_key_problem(value: str) -> str | None:
    """Why ``value`` is not fit for production (None when it is)."""
    try:
        keys = keyring(value)
    except SecretKeyError as exc:
        return str(exc)
    if any(k.id == "legacy" for k in keys):
        return (
            "SKEIN_SECRET_KEY must be a keyring of base64 32-byte keys (ID:KEY,...), "
            "not a passphrase"
        )
    if any(len(set(k.material)) < 8 for k in keys):
        return "SKEIN_SECRET_KEY holds a key that is not random"
    return None


def _legacy(passphrase: str) -> Key:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_LEGACY_INFO).derive(
        passphrase.encode("utf-8")
    )
    return Key("legacy", derived)


def _derived(key: Key, purpose: str) -> bytes:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r}")
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=f"skein {purpose}".encode()
    ).derive(key.material)


def _aad(purpose: str, client_id: int) -> bytes:
    return f"{purpose}/{client_id}".encode()


def encrypt(keys: str, plaintext: bytes, *, purpose: str, client_id: int) -> bytes:
    """Encrypt under the newest key, bound to ``purpose`` and ``client_id``."""
    key = keyring(keys)[-1]
    nonce = os.urandom(12)
    sealed = AESGCM(_derived(key, purpose)).encrypt(nonce, plaintext, _aad(purpose, client_id))
    return _MAGIC + key.id.encode() + b":" + nonce + sealed


def key_id_of(blob: bytes) -> str | None:
    """The id of the key that sealed ``blob`` (None for a value from before keyrings)."""
    if not blob.startswith(_MAGIC):
        return None
    return blob[len(_MAGIC) :].split(b":", 1)[0].decode("ascii", "replace")


def decrypt(keys: str, blob: bytes, *, purpose: str, client_id: int) -> bytes:
    """Decrypt what :func:`encrypt` sealed for this purpose and client; raise
    :class:`SecretKeyError` with the reason otherwise."""
    ring = keyring(keys)
    if not blob.startswith(_MAGIC):
        return _decrypt_legacy(ring, blob)
    key_id, sep, rest = blob[len(_MAGIC) :].partition(b":")
    found = next((k for k in ring if k.id.encode() == key_id), None)
    if not sep or found is None:
        raise SecretKeyError(
            f"stored secrets were sealed with key {key_id.decode('ascii', 'replace')!r}, which "
            "SKEIN_SECRET_KEY does not hold"
        )
    try:
        return AESGCM(_derived(found, purpose)).decrypt(
            rest[:12], rest[12:], _aad(purpose, client_id)
        )
    except (InvalidTag, ValueError):
        raise SecretKeyError(
            f"cannot decrypt stored secrets as this client's {purpose} secrets under key "
            f"{found.id!r} of SKEIN_SECRET_KEY: that key is not the one that sealed them, they "
            "belong to another client or purpose (copied from another row?), or the bytes are "
            "corrupt"
        ) from None


def _decrypt_legacy(ring: list[Key], blob: bytes) -> bytes:
    """A value from before keyrings: Fernet under a legacy passphrase's key."""
    for key in (k for k in ring if k.id == "legacy"):
        try:
            return Fernet(base64.urlsafe_b64encode(key.material)).decrypt(blob)
        except InvalidToken:
            continue
    raise SecretKeyError(
        "cannot decrypt stored secrets: SKEIN_SECRET_KEY is not the key they were "
        "encrypted with (a value from before keyrings needs its passphrase as legacy:...), "
        "or the stored bytes are corrupt"
    )
