"""``skein lake``: maintenance of a client's Iceberg tables (its destination of type iceberg),
safe while the loader runs (see ``services/loaders/iceberg/maintenance.py``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from common import control, destination_config, netpolicy
from common.settings import SharedSettings
from services.control.cli.shared import control_db, emit, fail, require_client
from services.loaders.core.protocol import Destination

lake_app = typer.Typer(no_args_is_help=True, help="Maintenance of a client's Iceberg tables.")


def _each_table(client_id: int, table: str | None, act: Any) -> list[dict[str, Any]]:
    """``act(table)`` on the client's Iceberg tables (or the one named), as its loader opens
    them (network policy, the client's credentials)."""
    from services.loaders.iceberg import maintenance
    from services.loaders.iceberg.loader import probe_warehouse

    shared = SharedSettings()
    with control_db() as conn:
        require_client(conn, client_id)
        raw = destination_config.get_destination(
            conn, shared.secret_key.get_secret_value(), client_id, reveal=True
        )
    if raw is None or raw["type"] != "iceberg":
        fail(f"client {client_id} has no iceberg destination")
    try:
        vetted = netpolicy.check_destination(
            netpolicy.from_settings(shared), "iceberg", raw["config"]
        )
    except netpolicy.DestinationRefused as exc:
        fail(f"refused by the network policy: {exc}")
    destination = Destination(client_id, "iceberg", raw["config"], raw["secrets"]).pinned_to(vetted)
    warehouse = probe_warehouse()
    session = warehouse.open(destination)
    try:
        return [act(t) for t in maintenance.tables_of(session, table)]
    except (ValueError, control.ControlError) as exc:
        fail(str(exc))
    finally:
        warehouse.close(session)


@lake_app.command("compact")
def lake_compact(
    client_id: int,
    table: Annotated[str | None, typer.Option(help="Only this table (its Stitch name).")] = None,
) -> None:
    """Rewrite the small data files of the client's Iceberg tables (or one) as few large ones,
    one commit a table. A loader committing every few seconds makes many small files: run it
    daily, or when reads slow down. Safe while the loader runs (a table it raced reports an
    error and is unchanged: run it again)."""
    from services.loaders.iceberg import maintenance

    emit({"client_id": client_id, "tables": _each_table(client_id, table, maintenance.compact)})


@lake_app.command("expire")
def lake_expire(
    client_id: int,
    older_than_days: Annotated[int, typer.Option(help="Expire snapshots older than this.")],
) -> None:
    """Expire the snapshots of the client's Iceberg tables older than N days (at least 1; the
    current one always stays): time travel stops there. Run it after compacting, daily or
    weekly. Safe while the loader runs."""
    from services.loaders.iceberg import maintenance

    def expire(t: Any) -> dict[str, Any]:
        return maintenance.expire(t, older_than_days)

    emit({"client_id": client_id, "tables": _each_table(client_id, None, expire)})
