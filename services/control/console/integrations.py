"""``/clients/{client_id}/integrations``: the client's Singer taps. Add one (installed and
discovered before the answer, its streams chosen, its schedule set), run it now, pause and
resume it, and read its run history and logs (secrets redacted when stored)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import RedirectResponse, Response

from common import control
from services.control import integrations
from services.control.api.base import control_of
from services.control.console.pages import ClientId
from services.control.console.web import (
    SECURITY_HEADERS,
    Changer,
    PageError,
    Viewer,
    attempt,
    client_page,
    own,
    render,
)
from services.extractor.settings import ExtractorSettings

router = APIRouter(include_in_schema=False)
Name = Annotated[str, Path(min_length=1, max_length=100)]
RUNS = 20
ACTIONS = {
    "run": integrations.run_now,
    "pause": integrations.pause,
    "resume": integrations.resume,
    "stop": integrations.stop,
}


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.replace(",", "\n").splitlines() if line.strip()]


async def _list_page(
    request: Request,
    client_id: int,
    *,
    error: str | None = None,
    error_field: str | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    return await client_page(
        request,
        client_id,
        "integrations.html",
        lambda conn: {"integrations": integrations.listed(conn, client_id)},
        status,
        error=error,
        error_field=error_field,
        values=values or {"schedule": "0 * * * *", "config": "{}"},
    )


@router.get("/clients/{client_id}/integrations")
async def integrations_page(request: Request, client_id: ClientId, _user: Viewer) -> Response:
    return await _list_page(request, client_id)


@router.post("/clients/{client_id}/integrations")
async def integration_add(
    request: Request,
    client_id: ClientId,
    user: Changer,
    name: Annotated[str, Form(max_length=1000)] = "",
    tap: Annotated[str, Form(max_length=1000)] = "",
    config: Annotated[str, Form(max_length=64 * 1024)] = "{}",
    schedule: Annotated[str, Form(max_length=1000)] = "0 * * * *",
    streams: Annotated[str, Form(max_length=64 * 1024)] = "",
    secret_keys: Annotated[str, Form(max_length=64 * 1024)] = "",
) -> Response:
    """Install and discover the tap, then store it; a refusal is shown beside its field."""
    ctl = control_of(request)
    await own(ctl, user, client_id)
    values = {
        "name": name,
        "tap": tap,
        "config": config,
        "schedule": schedule,
        "streams": streams,
        "secret_keys": secret_keys,
    }
    try:
        parsed = orjson.loads(config or "{}")
    except orjson.JSONDecodeError as exc:
        return await _list_page(
            request,
            client_id,
            error=f"The config is not JSON: {exc}",
            error_field="config",
            values=values,
            status=400,
        )

    def add(conn: control.Connection) -> dict[str, Any]:
        return integrations.add(
            conn,
            ExtractorSettings(),
            client_id=client_id,
            name=name.strip(),
            tap=tap.strip(),
            config=parsed,
            cron=schedule.strip(),
            select=_lines(streams),
            secret=_lines(secret_keys),
        )

    added, error = await attempt(lambda: ctl.run_long(add))
    if added is None:
        message = error or ""
        field = next(
            (f for f in ("schedule", "cron", "tap", "name", "config", "stream") if f in message),
            None,
        )
        field = {"cron": "schedule", "stream": "streams"}.get(field or "", field)
        return await _list_page(
            request,
            client_id,
            error=message,
            error_field=field,
            values=values,
            status=400,
        )
    return RedirectResponse(
        f"/clients/{client_id}/integrations/{added['name']}", 303, headers=SECURITY_HEADERS
    )


async def _detail(
    request: Request, client_id: int, name: str, message: str | None = None, status: int = 200
) -> Response:
    ctl = control_of(request)
    client = await own(ctl, request.state.session.user, client_id)

    def read(conn: control.Connection) -> dict[str, Any]:
        found = integrations.owned(conn, name, client_id)
        return {
            "integration": found,
            "runs": integrations.runs(conn, name, RUNS, False),
            "available": integrations.streams_of(conn, name),
        }

    context, error = await attempt(lambda: ctl.run(read))
    if context is None:  # an unknown name is a 404 already (attempt raises it)
        raise PageError(400, error or "")
    context.update(client=client, message=message)
    return render(request, "integration.html", context, status)


@router.get("/clients/{client_id}/integrations/{name}")
async def integration_page(
    request: Request, client_id: ClientId, name: Name, _user: Viewer
) -> Response:
    return await _detail(request, client_id, name)


@router.post("/clients/{client_id}/integrations/{name}/settings")
async def integration_settings(
    request: Request,
    client_id: ClientId,
    name: Name,
    user: Changer,
    schedule: Annotated[str, Form(max_length=1000)] = "",
    streams: Annotated[list[str] | None, Form()] = None,
) -> Response:
    """Its schedule and the streams it replicates (checkboxes; none ticked: every stream)."""
    ctl = control_of(request)
    await own(ctl, user, client_id)

    def act(conn: control.Connection) -> Any:
        integrations.owned(conn, name, client_id)
        return integrations.configure(conn, name, cron=schedule.strip(), select=streams or [])

    _, error = await attempt(lambda: ctl.run(act))
    message = error or "Saved: the next run uses this schedule and these streams."
    return await _detail(request, client_id, name, message, 400 if error else 200)


@router.post("/clients/{client_id}/integrations/{name}/{action}")
async def integration_action(
    request: Request,
    client_id: ClientId,
    name: Name,
    action: Annotated[str, Path(pattern="^(run|pause|resume|stop)$")],
    user: Changer,
) -> Response:
    ctl = control_of(request)
    await own(ctl, user, client_id)

    def act(conn: control.Connection) -> Any:
        integrations.owned(conn, name, client_id)
        return ACTIONS[action](conn, name)

    _, error = await attempt(lambda: ctl.run(act))
    done = {
        "run": "A run was requested: the extractor starts it within seconds.",
        "pause": "Paused: no run starts until it is resumed.",
        "resume": "Resumed: it runs on its schedule again.",
        "stop": "Stopping the running run.",
    }[action]
    return await _detail(request, client_id, name, error or done, 400 if error else 200)


@router.get("/clients/{client_id}/integrations/{name}/runs/{run_id}")
async def run_log_page(
    request: Request,
    client_id: ClientId,
    name: Name,
    run_id: ClientId,
    user: Viewer,
) -> Response:
    """One run's log: the tap's stderr, secrets redacted when it was stored."""
    ctl = control_of(request)
    client = await own(ctl, user, client_id)

    def read(conn: control.Connection) -> dict[str, Any]:
        integrations.owned(conn, name, client_id)
        return integrations.run_log(conn, name, run_id)

    found, _ = await attempt(lambda: ctl.run(read))
    if found is None:
        raise PageError(404, f"No run {run_id}.")
    return render(request, "run_log.html", {"client": client, "run": found})
