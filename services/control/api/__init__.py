"""The control service's HTTP API (127.0.0.1:8082): thin routes over the control-plane domain
(``common.control``, ``services.control.keys``, ``services.control.destinations``), the same
functions ``skein`` calls, so no rule exists twice.

Every request carries an API key (``Authorization: Bearer sko_…|skc_…``, ``skein keys create``).
An operator key acts on every client; a client key on its own client only, and any other
client's resources answer 404 (not 403: ids are not probed). Changes are attributed to the key
in the audit log (``key:<key_id>``). Errors are ``{"error": {"code", "message"}}`` with stable
codes; lists are pages ``{"data": [...], "next_after": id | null}``; the OpenAPI document is at
``/openapi.json``.
"""

from services.control.api.app import create_app

__all__ = ["create_app"]
