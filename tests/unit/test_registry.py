"""One registry of destination types: each type's folder has the same core files, its own
settings check, and the control plane's checks go through it."""

from __future__ import annotations

from pathlib import Path

import pytest

from common import control, destination_config
from services.control.cli.destinations import DestinationType
from services.control.destinations import settings_of as destination_settings
from services.loaders import registry
from services.loaders.core.destination import Model

LOADERS = Path(registry.__file__).parent
CORE_FILES = {
    "__init__.py",
    "__main__.py",
    "settings.py",
    "destination.py",
    "connection.py",
    "errors.py",
    "loader.py",
    "statements.py",
    "warehouse.py",
}


def test_every_type_is_registered_once_with_the_same_folder_shape() -> None:
    assert tuple(registry.TYPES) == destination_config.DESTINATION_TYPES
    assert [t.value for t in DestinationType] == list(registry.TYPES)
    folders = {p.name for p in LOADERS.iterdir() if (p / "__main__.py").exists()}
    assert folders == set(registry.TYPES)
    for name in registry.TYPES:
        present = {p.name for p in (LOADERS / name).iterdir() if p.suffix == ".py"}
        assert present >= CORE_FILES, (name, sorted(CORE_FILES - present))
        # A module beyond the shared shape is named, with its reason, in the folder's docstring.
        described = (LOADERS / name / "__init__.py").read_text()
        for extra in sorted(present - CORE_FILES):
            assert f"``{extra}``" in described, (name, extra)
        module = registry.get(name).destination
        assert callable(module.check)
        assert issubclass(module.Settings, Model) and issubclass(module.Secrets, Model)


SOME_VALID = {
    "postgres": ({"dsn_params": {"host": "h"}}, {"password": "p"}),
    "redshift": (
        {"dsn_params": {"host": "h"}, "s3_bucket": "b", "iam_role": "arn:aws:iam::1:role/r"},
        {},
    ),
    "bigquery": ({"project": "p"}, {}),
    "snowflake": ({"account": "a", "user": "u", "database": "d"}, {"password": "p"}),
}


@pytest.mark.parametrize("type_", list(SOME_VALID))
def test_each_type_refuses_settings_and_secrets_it_does_not_know(type_: str) -> None:
    """Typed settings: a misspelt setting is refused naming the known ones, not stored."""
    kind = registry.get(type_)
    config, secrets = SOME_VALID[type_]
    kind.check(config, secrets)
    with pytest.raises(control.ControlError, match=r"unknown .*'shcema' \(known: .*schema"):
        kind.check({**config, "shcema": "x"}, secrets)
    with pytest.raises(control.ControlError, match=r"unknown .*secret 'token'"):
        kind.check(config, {**secrets, "token": "t"})


@pytest.mark.parametrize(
    ("type_", "kwargs", "message"),
    [
        ("postgres", {"dsn": "dbname=w user=u"}, "needs a host"),
        ("postgres", {"dsn": "host=h port=abc"}, "'dsn_params.port': .*integer"),
        ("postgres", {"dsn": "host=h sslmode=sometimes"}, "'dsn_params.sslmode'"),
        ("redshift", {"dsn": "host=h dbname=d"}, "s3_bucket"),
        ("bigquery", {"dsn": None}, "project"),
        ("snowflake", {"dsn": None}, "--set account"),
        ("postgres", {"dsn": None}, "needs --dsn"),
        ("snowflake", {"dsn": "host=h"}, "takes no --dsn"),
        ("mysql", {"dsn": None}, "is not one of postgres, redshift, bigquery, snowflake"),
    ],
)
def test_each_type_checks_its_own_settings_through_the_registry(
    type_: str, kwargs: dict[str, str | None], message: str
) -> None:
    with pytest.raises(control.ControlError, match=message):
        destination_settings(type_, schema=None, settings={}, password=None, secrets={}, **kwargs)


def test_a_good_destination_of_each_dsn_type_passes() -> None:
    config, secrets = destination_settings(
        "postgres", dsn="postgresql://u:pw@h:5433/w", schema="s", settings={}, password=None,
        secrets={},
    )  # fmt: skip
    assert config == {"dsn_params": {"user": "u", "host": "h", "port": "5433", "dbname": "w"},
                      "schema": "s"}  # fmt: skip
    assert secrets == {"password": "pw"}


def test_the_spool_and_the_control_api_accept_every_registered_type() -> None:
    """The two Literal spellings of the list of types agree with the registry (a type missing
    from the spool's would have its lease requests refused with 422)."""
    from typing import get_args

    from services.control.api.models import DestinationIn
    from services.spool.app import DestinationType

    assert get_args(DestinationType) == tuple(registry.TYPES)
    assert get_args(DestinationIn.model_fields["type"].annotation) == tuple(registry.TYPES)
