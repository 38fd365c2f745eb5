"""The one classification skeleton every warehouse's ``classify`` runs, with its own hook."""

from __future__ import annotations

from botocore.exceptions import ClientError

from services.loaders.bigquery.errors import classify as bigquery
from services.loaders.core import errors
from services.loaders.core.errors import PermanentError, TransientError
from services.loaders.postgres.errors import classify as postgres
from services.loaders.redshift.errors import classify as redshift
from services.loaders.snowflake.errors import classify as snowflake

WAREHOUSES = (postgres, redshift, bigquery, snowflake)


def missing_object() -> ClientError:
    return ClientError({"Error": {"Code": "NoSuchKey", "Message": "gone"}}, "GetObject")


def test_the_skeleton_asks_the_hook_only_for_what_is_not_shared() -> None:
    asked: list[BaseException] = []

    def hook(exc: BaseException) -> errors.LoadError | None:
        asked.append(exc)
        return TransientError("driver says later") if isinstance(exc, KeyError) else None

    already = PermanentError("decided")
    assert errors.classify(already, hook) is already
    assert errors.classify(missing_object(), hook).kind == "permanent"
    assert errors.classify(KeyError("x"), hook).kind == "transient"
    assert errors.classify(ConnectionResetError(), hook).kind == "transient"
    assert errors.classify(ValueError("bug"), hook).kind == "permanent"
    assert [type(e) for e in asked] == [KeyError, ConnectionResetError, ValueError]


def test_every_warehouse_shares_the_skeleton() -> None:
    for classify in WAREHOUSES:
        assert classify(missing_object()).kind == "permanent", classify
        assert classify(TimeoutError("slow")).kind == "transient", classify
        assert classify(RuntimeError("unexpected")).kind == "permanent", classify
        decided = TransientError("kept")
        assert classify(decided) is decided, classify
