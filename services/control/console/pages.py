"""``/clients`` (every client's health; operators create clients here) and
``/clients/{client_id}`` (its tables: freshness, rows, last load and error, waiting and dead
batches, charts of the last hour, rejected records; dead batches retried or skipped)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import RedirectResponse, Response

from common import control
from services.control import accounts, loadlog
from services.control.api.base import INT8, control_of
from services.control.console.charts import Series, line_chart
from services.control.console.web import (
    SECURITY_HEADERS,
    Changer,
    PageError,
    Viewer,
    attempt,
    is_htmx,
    operator,
    own,
    render,
)
from services.spool import operations, queue
from services.spool import status as table_status

router = APIRouter(include_in_schema=False)
ClientId = Annotated[int, Path(ge=1, le=INT8)]
PAGE = 50
HOUR = 3600.0


@router.get("/clients")
async def clients_page(
    request: Request,
    user: Viewer,
    after: Annotated[int, Query(ge=0, le=INT8)] = 0,
) -> Response:
    """Operators: every client, a page at a time, with its health. A client's user goes to
    its own client's page."""
    if not user.operator:
        return RedirectResponse(f"/clients/{user.client_id}", 303, headers=SECURITY_HEADERS)
    return render(request, "clients.html", await _clients(request, after))


async def _clients(request: Request, after: int) -> dict[str, Any]:
    ctl = control_of(request)

    def read(conn: control.Connection) -> dict[str, Any]:
        found = accounts.list_clients(conn, after=after, limit=PAGE + 1)
        page = found[:PAGE]
        health = table_status.client_health(conn, [c["client_id"] for c in page])
        objective = table_status.FRESHNESS_OBJECTIVE_S
        for client in page:
            client["health"] = health.get(client["client_id"], {})
            age = client["health"].get("oldest_unloaded_age_s")
            client["problems"] = [
                *([f"{client['health']['dead']} dead"] if client["health"].get("dead") else []),
                *([f"stale {age:.0f}s"] if age is not None and age > objective else []),
            ]
        return {
            "clients": page,
            "next_after": page[-1]["client_id"] if len(found) > PAGE else None,
        }

    return await ctl.run(read)


@router.post("/clients")
async def clients_create(
    request: Request,
    user: Changer,
    name: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    operator(user)
    ctl = control_of(request)
    if not name.strip() or len(name) > 200:
        context = await _clients(request, 0)
        context.update(error="A client name is 1 to 200 characters.", name=name)
        return render(request, "clients.html", context, 400)
    created, error = await attempt(
        lambda: ctl.run(lambda conn: accounts.create_client(conn, name.strip()))
    )
    if created is None:
        context = await _clients(request, 0)
        context.update(error=error, name=name)
        return render(request, "clients.html", context, 400)
    return RedirectResponse(f"/clients/{created['client_id']}", 303, headers=SECURITY_HEADERS)


@router.get("/clients/{client_id}")
async def client_page(request: Request, client_id: ClientId, user: Viewer) -> Response:
    client = await own(control_of(request), user, client_id)
    context = await _tables(request, client_id)
    context["client"] = client
    return render(request, "client.html", context)


@router.get("/clients/{client_id}/tables")
async def client_tables(request: Request, client_id: ClientId, user: Viewer) -> Response:
    """The tables part of the client's page (htmx refreshes it)."""
    client = await own(control_of(request), user, client_id)
    context = await _tables(request, client_id)
    context["client"] = client
    return render(request, "client_tables.html", context)


async def _tables(request: Request, client_id: int) -> dict[str, Any]:
    ctl = control_of(request)
    objective = table_status.FRESHNESS_OBJECTIVE_S

    def read(conn: control.Connection) -> dict[str, Any]:
        tables = table_status.tables(conn, client_id)
        activity = table_status.table_activity(conn, client_id, HOUR)
        dead = operations.page_batches(conn, state="dead", client_id=client_id, limit=PAGE)
        rejected = loadlog.rejected(conn, client_id, limit=20)
        return {
            "tables": [table_status.assess(t, objective).as_dict() for t in tables],
            "activity": activity,
            "dead": dead,
            "rejected": rejected,
        }

    found = await ctl.run(read)
    end = time.time()
    for table in found["tables"]:
        act = found["activity"].get(table["table_name"], {})
        table["rows_loaded"] = act.get("rows_loaded", 0)
        table["freshness_chart"] = line_chart(
            f"{table['table_name']}: freshness at load, last hour",
            [Series("worst per minute", act.get("freshness_s", []))],
            end - HOUR,
            end,
            "s",
        )
        table["rows_chart"] = line_chart(
            f"{table['table_name']}: rows loaded per minute, last hour",
            [Series("rows/min", act.get("rows_per_min", []))],
            end - HOUR,
            end,
        )
    found["objective_s"] = objective
    return found


@router.post("/clients/{client_id}/batches/{batch_id}/{action}")
async def batch_action(
    request: Request,
    client_id: ClientId,
    batch_id: ClientId,
    action: Annotated[str, Path(pattern="^(retry|skip)$")],
    user: Changer,
) -> Response:
    """Retry a dead batch (to the client's destination as it is now), or skip it so its
    table's later batches can load."""
    ctl = control_of(request)
    await own(ctl, user, client_id)

    def act(conn: control.Connection) -> int:
        found = operations.get_batch(conn, batch_id)
        if found["client_id"] != client_id:
            raise operations.NotFound(f"no batch {batch_id}")
        return (operations.retry if action == "retry" else operations.skip)(conn, batch_id)

    try:
        await ctl.run(act)
        message = f"Batch {batch_id} {'retried' if action == 'retry' else 'skipped'}."
    except operations.NotFound as exc:
        raise PageError(404, str(exc)) from None
    except queue.Conflict as exc:
        message = str(exc)
    if is_htmx(request):
        return render(request, "batch_done.html", {"message": message, "batch_id": batch_id})
    return RedirectResponse(f"/clients/{client_id}", 303, headers=SECURITY_HEADERS)
