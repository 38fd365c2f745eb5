"""What a warehouse loader implements for the lease loop (``Warehouse``), and the destination
it is handed (``Destination``).

``Warehouse`` is generic over its session type: each loader names the session it opens (a
psycopg2 connection, a Snowflake connection, a BigQuery ``Session``) by subclassing
``Warehouse[ItsSession]``, so mypy checks every method that takes a session against that type,
and the runner and its session pool carry it through unchanged. The lease loop
(``runner.Runner``) drives a warehouse only through this protocol, and so does the shared
conformance suite (``tests/integration/test_*_conformance.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from common.spool_client import Lease
from services.loaders.core.errors import LoadError
from services.loaders.core.reader import Event

SessionT = TypeVar("SessionT")  # what ``open`` returns and every other call is given back


@dataclass(frozen=True)
class Destination:
    client_id: int
    type: str
    config: dict[str, Any]
    secrets: dict[str, str]
    # When the destination was last set: sessions opened under another version are not reused.
    version: str = ""
    # What an operator allowed this client to do with the platform's credentials.
    grants: tuple[tuple[str, str], ...] = ()
    # (host, address) the network policy vetted just before this session was opened: a loader
    # that can connect to an address (libpq's hostaddr) does, closing the DNS-rebinding window.
    pinned: tuple[tuple[str, str], ...] = ()

    def pinned_to(self, vetted: dict[str, list[str]]) -> Destination:
        """This destination pinned to the first address the network policy vetted per host
        (``netpolicy.check_destination``'s answer)."""
        pins = tuple((host, found[0]) for host, found in vetted.items() if found)
        return dataclasses.replace(self, pinned=pins)


class Warehouse(Protocol[SessionT]):
    """What a warehouse loader implements (see services/loaders/postgres/)."""

    type: str

    def open(self, destination: Destination) -> SessionT:
        """A session/connection to the client's warehouse."""

    def close(self, session: SessionT) -> None: ...

    def already_loaded(
        self, session: SessionT, destination: Destination, ids: list[int]
    ) -> set[int]:
        """Which of these batch ids this warehouse already holds (committed before a crash)."""

    def load(
        self,
        session: SessionT,
        destination: Destination,
        lease: Lease,
        batch_ids: list[int],
        stream: Iterator[Event],
    ) -> tuple[int, int]:
        """Load in one transaction with the batch ids; return (rows written, rejected)."""

    def classify(self, exc: BaseException) -> LoadError:
        """Transient (retry with back-off) or permanent (park the batch)."""

    def cancel(self, session: SessionT) -> None:
        """Interrupt what the session is running (from another thread); best effort."""

    def probe(self, session: SessionT, destination: Destination) -> str:
        """One round trip to the warehouse, described (``skein destinations test``)."""


class SharesSessions(Protocol):
    """A warehouse whose sessions carry nothing of the client that opened them (no session
    state, no client-specific target) may say so: destinations with the same identity (every
    setting and secret the session is opened with) then share idle sessions. Clients with the
    same credentials on one server are no more able to reach each other through a shared
    session than through their own. Checks that depend on the client (the platform's grants)
    run for every load, not only when a session opens."""

    def session_identity(self, destination: Destination) -> Hashable: ...
