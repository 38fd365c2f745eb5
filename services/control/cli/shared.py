"""What every command group shares: one JSON object on stdout, errors as JSON, the control
database."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from typing import Any, NoReturn

import orjson
import typer

from common import control, crypto, db
from services.control import accounts


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")


def fail(message: str, code: int = 1) -> NoReturn:
    emit({"error": message})
    raise typer.Exit(code)


@contextmanager
def connected(*refusals: type[Exception]) -> Iterator[control.Connection]:
    """A control-database connection; any of ``refusals`` raised inside it becomes the JSON
    error."""
    try:
        with closing(db.connect()) as conn:
            yield conn
    except refusals as exc:
        fail(str(exc))


def control_db() -> AbstractContextManager[control.Connection]:
    """A control-database connection; a refused request inside it becomes the JSON error."""
    return connected(control.ControlError, crypto.SecretKeyError)


def require_client(conn: control.Connection, client_id: int) -> None:
    """Stop with an error for an unknown client, rather than answer with an empty list."""
    if accounts.get_client(conn, client_id) is None:
        raise control.ControlError(f"no client {client_id}")


def pairs(values: list[str], option: str) -> dict[str, str]:
    """``["K=V", ...]`` as a dict; an entry without ``=`` or with an empty key is an error."""
    found: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise control.ControlError(f"{option} expects KEY=VALUE, got {value!r}")
        found[key] = rest
    return found


def from_env(variable: str) -> str:
    """A secret from the environment, so it never appears in argv or shell history."""
    value = os.environ.get(variable)
    if not value:
        raise control.ControlError(f"environment variable {variable} is not set or empty")
    return value
