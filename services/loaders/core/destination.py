"""Typed destination settings: what each type's ``destination.py`` builds its models from.

A destination is stored as two JSON objects, its plain ``config`` and its sealed ``secrets``.
Each type declares both as pydantic models (``Settings``, ``Secrets``) that forbid unknown
keys, so ``skein destinations set`` refuses a misspelt or unsupported setting with the list of
known ones instead of storing it. They validate, they do not rewrite: the stored objects stay as
given, and the loaders keep reading them as before, so a destination stored before a setting
was dropped still loads (it is refused only when it is set again).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Port = Annotated[int, Field(ge=1, le=65535)]
NonEmpty = Annotated[str, Field(min_length=1)]


class Model(BaseModel):
    """A destination's settings or secrets: unknown keys refused, numbers given as text
    (a DSN's ``port=5433``) accepted."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class DsnParams(Model):
    """The libpq parameters a destination may store (the allow-list of the tenant boundary)."""

    host: NonEmpty
    port: Port | None = None
    dbname: str | None = None
    user: str | None = None
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None = (
        None
    )
    sslrootcert: str | None = None
    connect_timeout: Annotated[int, Field(ge=0)] | None = None


M = TypeVar("M", bound=Model)


def validated(model: type[M], data: dict[str, Any], what: str) -> M:
    """``data`` as ``model``; raises ValueError naming each bad field in one line."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        known = ", ".join(sorted(f.alias or name for name, f in model.model_fields.items()))
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or what
            if error["type"] == "extra_forbidden":
                problems.append(f"unknown {what} {where!r} (known: {known})")
            elif error["type"] == "missing":
                problems.append(f"{what} {where!r} is required")
            else:
                problems.append(f"{what} {where!r}: {error['msg']}")
        raise ValueError("; ".join(problems)) from None
