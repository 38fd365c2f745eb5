from __future__ import annotations

import pytest

from common import crypto


def test_round_trip() -> None:
    sealed = crypto.encrypt("a key", b'{"password": "hunter2"}')
    assert crypto.decrypt("a key", sealed) == b'{"password": "hunter2"}'


def test_each_encryption_differs() -> None:
    assert crypto.encrypt("a key", b"same") != crypto.encrypt("a key", b"same")


def test_a_wrong_key_is_a_secret_key_error() -> None:
    sealed = crypto.encrypt("the key", b"secret")
    with pytest.raises(crypto.SecretKeyError, match="SKEIN_SECRET_KEY"):
        crypto.decrypt("another key", sealed)


def test_corrupt_bytes_are_a_secret_key_error() -> None:
    sealed = bytearray(crypto.encrypt("the key", b"secret"))
    sealed[-5] ^= 1
    with pytest.raises(crypto.SecretKeyError):
        crypto.decrypt("the key", bytes(sealed))


def test_an_empty_key_is_refused() -> None:
    with pytest.raises(crypto.SecretKeyError, match="empty"):
        crypto.encrypt("", b"secret")


def test_the_ciphertext_does_not_contain_the_plaintext() -> None:
    plaintext = b"correct-horse-battery-staple"
    sealed = crypto.encrypt("a key", plaintext)
    assert plaintext not in sealed
    assert b"correct" not in sealed
