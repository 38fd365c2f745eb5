"""Errors the gate answers with, each a status and a JSON body in the form clients expect."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An HTTP answer other than success: status, JSON body, extra headers."""

    def __init__(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body
        self.headers = headers or {}


def status_error(status: int, message: str, headers: dict[str, str] | None = None) -> ApiError:
    """The Import API's generic form: ``{"status": "ERROR", "message": ...}``."""
    return ApiError(status, {"status": "ERROR", "message": message}, headers)


def batch_error(message: str) -> ApiError:
    """Every /v2/import/batch validation error: 400 ``{"error": ...}``."""
    return ApiError(400, {"error": message})


def not_authorized() -> ApiError:
    return ApiError(401, {"message": "Not Authorized"})


def forbidden() -> ApiError:
    return ApiError(
        403,
        {
            "status": "ERROR",
            "error": "Forbidden",
            "errors": {"error": "Access token is not associated with this client."},
        },
    )


def unprocessable(reasons: list[str]) -> ApiError:
    return ApiError(
        422,
        {
            "status": "ERROR",
            "error": "Request cannot be processed; see errors.",
            "errors": [{"reason": r} for r in reasons],
        },
    )


def unavailable(message: str, retry_after: int) -> ApiError:
    return status_error(503, message, {"Retry-After": str(retry_after)})
