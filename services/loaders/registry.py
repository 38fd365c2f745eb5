"""The destination types, in one place: each type's module ``services.loaders.<type>.destination``
checks a destination's settings when it is set (``check(config, secrets)``, no driver import),
and ``services.loaders.<type>.loader`` opens it as its loader does (``probe_warehouse()``).
The control plane asks this registry instead of branching on type names."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from common import control, destination_config


@dataclass(frozen=True)
class DestinationType:
    name: str
    takes_dsn: bool  # its connection is a libpq DSN (``--dsn``): postgres, redshift, iceberg

    @property
    def destination(self) -> ModuleType:
        return importlib.import_module(f"services.loaders.{self.name}.destination")

    @property
    def loader(self) -> ModuleType:
        """The loader module (imports the warehouse's driver)."""
        return importlib.import_module(f"services.loaders.{self.name}.loader")

    def check(self, config: dict[str, Any], secrets: dict[str, str]) -> None:
        """Everything the control plane checks when a destination is set: the shared rules
        (``destination_config.check_destination``: libpq allow-list, secrets never in plain
        settings), then the type's own; raises ``control.ControlError``."""
        destination_config.check_destination(self.name, config, secrets)
        try:
            self.destination.check(config, secrets)
        except ValueError as exc:
            raise control.ControlError(str(exc)) from None


TYPES: dict[str, DestinationType] = {
    t.name: t
    for t in (
        DestinationType("postgres", takes_dsn=True),
        DestinationType("redshift", takes_dsn=True),
        DestinationType("bigquery", takes_dsn=False),
        DestinationType("snowflake", takes_dsn=False),
        # --dsn: the SQL catalog's Postgres database
        DestinationType("iceberg", takes_dsn=True),
    )
}
# One list, read by the control database code.
assert tuple(TYPES) == destination_config.DESTINATION_TYPES


def get(name: str) -> DestinationType:
    try:
        return TYPES[name]
    except KeyError:
        raise control.ControlError(
            f"destination type {name!r} is not one of {', '.join(TYPES)}"
        ) from None
