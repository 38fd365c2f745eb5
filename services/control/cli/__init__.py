"""``skein``: the operators' CLI. Every command prints one JSON object on stdout; each command
group is its own module here, over the control plane's domain (``services/control/``)."""

from __future__ import annotations

import typer

from common import audit
from services.control.cli.audit_log import audit_app
from services.control.cli.clients import clients_app
from services.control.cli.database import db_app
from services.control.cli.destinations import destinations_app
from services.control.cli.hooks import hooks_app
from services.control.cli.integrations import integrations_app
from services.control.cli.kafka import kafka_app
from services.control.cli.keys import keys_app
from services.control.cli.lake import lake_app
from services.control.cli.loadlog import rejected_app, schema_app
from services.control.cli.replay import replay
from services.control.cli.secrets import secrets_app
from services.control.cli.spool import spool_app
from services.control.cli.status import status
from services.control.cli.tokens import tokens_app
from services.control.cli.users import users_app
from services.control.cli.webhooks import webhooks_app

app = typer.Typer(
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, help=__doc__
)
for group, name in (
    (db_app, "db"),
    (kafka_app, "kafka"),
    (clients_app, "clients"),
    (tokens_app, "tokens"),
    (webhooks_app, "webhooks"),
    (hooks_app, "hooks"),
    (schema_app, "schema"),
    (rejected_app, "rejected"),
    (destinations_app, "destinations"),
    (spool_app, "spool"),
    (integrations_app, "integrations"),
    (audit_app, "audit"),
    (keys_app, "keys"),
    (lake_app, "lake"),
    (users_app, "users"),
    (secrets_app, "secrets"),
):
    app.add_typer(group, name=name)
app.command("status")(status)
app.command("replay")(replay)


@app.callback()
def _every_command() -> None:
    # Changes this process makes are audited as this OS user's.
    audit.set_actor(audit.os_actor())


def main() -> None:
    app()
