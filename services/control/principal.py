"""Who acts on the control plane: an API key (``keys.Key``) or a console user
(``users.User``). ``client_id`` None is an operator, who may act for every client; otherwise
the principal acts for that one client only."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    client_id: int | None

    @property
    def operator(self) -> bool:
        return self.client_id is None

    @property
    def actor(self) -> str:
        """The audit log's actor for the changes this principal makes."""
        raise NotImplementedError

    def may_act_for(self, client_id: int) -> bool:
        return self.client_id is None or self.client_id == client_id
