"""Keeping secrets out of what a tap prints (pure)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "[redacted]"
# Config keys whose values are secrets whatever the tap: passwords, tokens, keys, credentials,
# and connection strings (which usually embed a password).
_SECRET_NAME = re.compile(
    r"pass|secret|token|api_?key|private|credential|auth|sqlalchemy_url|dsn|connection_string"
    r"|access_key|client_key|session|cookie",
    re.IGNORECASE,
)
# user:password@ in any URL-like value.
_URL_PASSWORD = re.compile(r"(?<=://)([^/:@\s]*):([^@/\s]+)@")
_MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words


def secret_keys(config: Mapping[str, Any], extra: Iterable[str] = ()) -> list[str]:
    """Top-level config keys judged secret by name, plus the ones the operator named."""
    named = set(extra)
    return sorted(k for k in config if k in named or _SECRET_NAME.search(k))


def secret_values(config: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    """Every string under the secret ``keys`` (nested values too), and the password of any
    URL anywhere in the config; longest first, so a secret containing another is masked whole."""
    found: set[str] = set()
    keys = set(keys)

    def walk(value: Any, secret: bool) -> None:
        if isinstance(value, str):
            if secret:
                found.add(value)
            found.update(m.group(2) for m in _URL_PASSWORD.finditer(value))
        elif isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, secret or (isinstance(k, str) and bool(_SECRET_NAME.search(k))))
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v, secret)

    for key, value in config.items():
        walk(value, key in keys)
    return sorted((v for v in found if len(v) >= _MIN_SECRET_LENGTH), key=len, reverse=True)


class Redactor:
    """Masks known secret values, and URL passwords, in text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        ordered = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __call__(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{MASK}@", text)
