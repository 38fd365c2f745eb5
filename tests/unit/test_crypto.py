"""Secrets at rest: a keyring, AES-GCM bound to the client and purpose, rotation-friendly."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from common import crypto
from common.settings import SharedSettings

D = {"purpose": "destination", "client_id": 7}


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def test_round_trip_under_a_keyring() -> None:
    ring = f"k1:{key()}"
    sealed = crypto.encrypt(ring, b'{"password": "hunter2"}', **D)
    assert sealed.startswith(b"sk1:k1:")
    assert crypto.decrypt(ring, sealed, **D) == b'{"password": "hunter2"}'


def test_each_encryption_differs_and_hides_the_plaintext() -> None:
    ring = f"k1:{key()}"
    a, b = (crypto.encrypt(ring, b"correct-horse-battery", **D) for _ in range(2))
    assert a != b and b"correct" not in a


def test_a_value_copied_to_another_client_or_purpose_does_not_open() -> None:
    ring = f"k1:{key()}"
    sealed = crypto.encrypt(ring, b"secret", **D)
    with pytest.raises(crypto.SecretKeyError, match="another client or purpose"):
        crypto.decrypt(ring, sealed, purpose="destination", client_id=8)
    with pytest.raises(crypto.SecretKeyError, match="another client or purpose"):
        crypto.decrypt(ring, sealed, purpose="integration", client_id=7)


def test_the_newest_key_encrypts_and_every_key_decrypts() -> None:
    old, new = key(), key()
    before = crypto.encrypt(f"k1:{old}", b"x", **D)
    ring = f"k1:{old},k2:{new}"
    after = crypto.encrypt(ring, b"y", **D)
    assert crypto.key_id_of(after) == "k2" and crypto.key_id_of(before) == "k1"
    assert crypto.decrypt(ring, before, **D) == b"x"
    with pytest.raises(crypto.SecretKeyError, match="'k1', which"):
        crypto.decrypt(f"k2:{new}", before, **D)


def test_corrupt_bytes_are_a_secret_key_error() -> None:
    ring = f"k1:{key()}"
    sealed = bytearray(crypto.encrypt(ring, b"secret", **D))
    sealed[-5] ^= 1
    with pytest.raises(crypto.SecretKeyError):
        crypto.decrypt(ring, bytes(sealed), **D)


def test_a_passphrase_is_one_legacy_key_and_old_fernet_values_still_open() -> None:
    passphrase = "an old passphrase"
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"skein destinations"
    ).derive(passphrase.encode())
    before_keyrings = Fernet(base64.urlsafe_b64encode(derived)).encrypt(b"old secret")
    assert crypto.decrypt(passphrase, before_keyrings, **D) == b"old secret"
    ring = f"legacy:{passphrase},k2:{key()}"  # rotating off the passphrase
    assert crypto.decrypt(ring, before_keyrings, **D) == b"old secret"
    assert crypto.key_id_of(crypto.encrypt(ring, b"z", **D)) == "k2"
    with pytest.raises(crypto.SecretKeyError, match="legacy"):
        crypto.decrypt(f"k2:{key()}", before_keyrings, **D)


def test_bad_keyrings_are_refused() -> None:
    with pytest.raises(crypto.SecretKeyError, match="empty"):
        crypto.keyring("")
    with pytest.raises(crypto.SecretKeyError, match="16 bytes"):
        crypto.keyring(f"k1:{base64.b64encode(os.urandom(16)).decode()}")
    with pytest.raises(crypto.SecretKeyError, match="share an id"):
        crypto.keyring(f"k1:{key()},k1:{key()}")


def test_production_refuses_a_passphrase_a_placeholder_or_a_weak_key() -> None:
    for value in ("skein-local-development-key-change-me", "a passphrase",
                  f"k1:{base64.b64encode(bytes(32)).decode()}"):  # fmt: skip
        with pytest.raises(ValueError):  # a ConfigError, as pydantic reports it
            SharedSettings(SKEIN_ENV="production", SKEIN_SECRET_KEY=value,
                           SKEIN_SPOOL_TOKEN="a-real-token", SKEIN_KAFKA_USERNAME="gate",
                           SKEIN_S3_SECRET_KEY="an-s3-secret",
                           SKEIN_KAFKA_PASSWORD="pw")  # fmt: skip
    ok = SharedSettings(SKEIN_ENV="production", SKEIN_SECRET_KEY=f"k1:{key()}",
                        SKEIN_SPOOL_TOKEN="a-real-token", SKEIN_KAFKA_USERNAME="gate",
                        SKEIN_S3_SECRET_KEY="an-s3-secret", SKEIN_KAFKA_PASSWORD="pw")  # fmt: skip
    assert ok.env == "production"
