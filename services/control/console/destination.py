"""``/clients/{client_id}/destination``: the client's destination, a form per type built from
the destination registry's typed models (``services.loaders.<type>.destination``), and a
"test connection" button.

Secrets are written, never read back: the form shows which are stored, and a secret left
blank keeps the stored value when the type stays the same.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from common import control
from services.control import destinations
from services.control.api.base import control_of
from services.control.console.pages import ClientId
from services.control.console.web import (
    SECURITY_HEADERS,
    Changer,
    PageError,
    Viewer,
    own,
    render,
)
from services.loaders import registry

router = APIRouter(include_in_schema=False)
MAX_FIELD = 64 * 1024
LONG_SECRETS = ("credentials_json", "private_key")


@dataclass(frozen=True)
class Field:
    name: str  # the stored key (a model field's alias)
    label: str
    choices: tuple[str, ...] = ()  # a select's options (Literal settings)
    long: bool = False  # a textarea (a credentials file, a PEM key)


def _fields(model: type[Any], skip: tuple[str, ...] = ()) -> list[Field]:
    found = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key in skip:
            continue
        choices: tuple[str, ...] = ()
        for arg in typing.get_args(info.annotation) or (info.annotation,):
            if typing.get_origin(arg) is typing.Literal:
                choices = tuple(str(c) for c in typing.get_args(arg))
        found.append(Field(key, key.replace("_", " ").capitalize(), choices, key in LONG_SECRETS))
    return found


def form_of(type_name: str) -> dict[str, Any]:
    """The form of one destination type: its DSN (postgres, redshift), settings and secrets."""
    kind = registry.get(type_name)
    module = kind.destination
    return {
        "type": type_name,
        "takes_dsn": kind.takes_dsn,
        "settings": _fields(module.Settings, skip=("dsn_params",)),
        "secrets": _fields(module.Secrets),
    }


def _dsn_text(config: dict[str, Any]) -> str:
    params = config.get("dsn_params") or {}
    return " ".join(f"{k}={v}" for k, v in params.items())


async def _page(
    request: Request,
    client_id: int,
    chosen: str | None,
    *,
    values: dict[str, str] | None = None,
    error: str | None = None,
    error_field: str | None = None,
    saved: bool = False,
    status: int = 200,
) -> Response:
    ctl = control_of(request)
    client = await own(ctl, request.state.session.user, client_id)
    try:
        current = await ctl.run(lambda conn: destinations.show(conn, ctl.settings, client_id))
    except control.NotFound:
        current = None
    type_name = chosen or (current["type"] if current else "postgres")
    if type_name not in registry.TYPES:
        raise PageError(404, f"No destination type {type_name!r}.")
    if values is None:
        values = {}
        if current and current["type"] == type_name:
            values = {k: str(v) for k, v in current["config"].items() if k != "dsn_params"}
            values["dsn"] = _dsn_text(current["config"])
    context = {
        "client": client,
        "current": current,
        "types": list(registry.TYPES),
        "form": form_of(type_name),
        "values": values,
        "secrets_set": current["secrets_set"] if current and current["type"] == type_name else [],
        "error": error,
        "error_field": error_field,
        "saved": saved,
    }
    return render(request, "destination.html", context, status)


@router.get("/clients/{client_id}/destination")
async def destination_page(
    request: Request,
    client_id: ClientId,
    _user: Viewer,
    type: Annotated[str | None, Query(max_length=50)] = None,
    saved: bool = False,
) -> Response:
    return await _page(request, client_id, type, saved=saved)


@router.post("/clients/{client_id}/destination")
async def destination_save(request: Request, client_id: ClientId, user: Changer) -> Response:
    """Store the destination (checked by the type's module and the network policy, as the API
    does); a refusal is shown next to the form, and nothing is stored."""
    ctl = control_of(request)
    await own(ctl, user, client_id)
    form = await request.form()
    given = {k: v for k, v in form.items() if isinstance(v, str) and len(v) <= MAX_FIELD}
    type_name = given.get("type", "")
    if type_name not in registry.TYPES:
        raise PageError(400, "Choose a destination type.")
    spec = form_of(type_name)
    settings = {f.name: given.get(f"set.{f.name}", "").strip() for f in spec["settings"]}
    settings = {k: v for k, v in settings.items() if v}
    schema = settings.pop("schema", None)
    secrets = {f.name: given.get(f"secret.{f.name}", "") for f in spec["secrets"]}
    values = {**settings, "dsn": given.get("dsn", ""), **({"schema": schema} if schema else {})}

    def save(conn: control.Connection) -> dict[str, Any]:
        try:
            kept = destinations.stored(conn, ctl.settings, client_id)
        except control.NotFound:
            kept = None
        if kept is not None and kept["type"] == type_name:  # blank: keep the stored secret
            for name, value in list(secrets.items()):
                if not value and name in kept.get("secrets", {}):
                    secrets[name] = kept["secrets"][name]
        config, sealed = destinations.settings_of(
            type_name,
            dsn=given.get("dsn", "").strip() or None if spec["takes_dsn"] else None,
            schema=schema,
            settings=settings,
            password=None,
            secrets={k: v for k, v in secrets.items() if v},
        )
        return destinations.put(conn, ctl.settings, client_id, type_name, config, sealed)

    try:
        await ctl.run(save)
    except control.NotFound as exc:
        raise PageError(404, str(exc)) from None
    except control.ControlError as exc:
        message = str(exc)
        names = [f.name for f in (*spec["settings"], *spec["secrets"])]
        field = next((n for n in names if f"'{n}'" in message), None)
        where = ("dsn", "host", "port", "dbname", "network policy", "destination ")
        if field is None and spec["takes_dsn"] and any(w in message.lower() for w in where):
            field = "dsn"
        return await _page(
            request,
            client_id,
            type_name,
            values=values,
            error=message,
            error_field=field,
            status=400,
        )
    return RedirectResponse(
        f"/clients/{client_id}/destination?saved=true", 303, headers=SECURITY_HEADERS
    )


@router.post("/clients/{client_id}/destination/test")
async def destination_test(request: Request, client_id: ClientId, user: Changer) -> Response:
    """Connect as the loader would; the result replaces the button's status line (htmx)."""
    ctl = control_of(request)
    await own(ctl, user, client_id)
    try:
        raw = await ctl.run(lambda conn: destinations.stored(conn, ctl.settings, client_id))
        report = await ctl.probe(
            client_id, lambda: destinations.probe(ctl.settings, client_id, raw)
        )
    except control.NotFound:
        report = {"ok": False, "error": "This client has no destination yet: save one first."}
    except Exception as exc:  # a test already running (429) reads as its message
        report = {"ok": False, "error": getattr(exc, "message", str(exc))}
    return render(request, "destination_test.html", {"report": report})
