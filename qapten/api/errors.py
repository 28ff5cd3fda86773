"""Every error leaves as JSON ``{"code", "message", "details"}`` with the right status.

The mapping lives in a route class rather than in app exception handlers, so that the router
behaves the same when mounted inside someone else's FastAPI app.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from qapten.api.deciding import ApprovedTwice
from qapten.errors import (
    InvalidDecision,
    ProposalAlreadyDecided,
    ProposalNotFound,
    QaptenError,
    RunNotFound,
)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details, self.headers = details, headers


def error_response(error: ApiError) -> JSONResponse:
    body = {"code": error.code, "message": error.message, "details": error.details}
    return JSONResponse(jsonable_encoder(body), status_code=error.status, headers=error.headers)


def as_api_error(exc: Exception) -> ApiError | None:
    """The HTTP form of an engine error, or None for a bug (which must stay a 500)."""
    match exc:
        case ApiError():
            return exc
        case ProposalNotFound() | RunNotFound():
            return ApiError(404, "not_found", str(exc))
        case ProposalAlreadyDecided():
            return ApiError(
                409,
                "already_decided",
                str(exc),
                details={"status": exc.status, "decided_by": exc.decided_by},
            )
        case ApprovedTwice():  # before InvalidDecision, which it is too
            return ApiError(409, "already_approved", str(exc), details={"approvals": exc.approvals})
        case InvalidDecision():
            return ApiError(422, "invalid_decision", str(exc))
        case RequestValidationError():
            problems = [
                {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
                for err in exc.errors()
            ]
            message = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
            return ApiError(422, "invalid_request", message, details={"errors": problems})
        case QaptenError():
            return ApiError(400, "bad_request", str(exc))
    return None


class QaptenRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await handle(request)
            except Exception as exc:
                error = as_api_error(exc)
                if error is None:
                    raise
                return error_response(error)

        return handler
