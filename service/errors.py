"""Errors as `application/problem+json` (RFC 9457), from one table of error kind -> HTTP status.

Library errors (`bonds.errors`) and the service's own carry a stable `kind`; `STATUS` maps it to a
status code, so no router picks codes by hand. Every problem has `type, title, status, detail` and the
request id; item errors add the `index` of the offending input. Anything unexpected becomes a generic
500 that names only the request id: the traceback goes to the log, never to the client.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from bonds.errors import FreeBindError

log = logging.getLogger("freebind.service")
PROBLEM_JSON = "application/problem+json"

# kind -> (status, title). The one place an error kind becomes an HTTP status.
STATUS: dict[str, tuple[int, str]] = {
    "unknown_name": (404, "Unknown name"),  # a space, collection or item that does not exist
    "invalid_mixing": (422, "Invalid mixing"),
    "unsupported_modality": (422, "Unsupported modality"),
    "dimension_mismatch": (422, "Dimension mismatch"),
    "invalid_media": (422, "Invalid media"),
    "invalid_input": (422, "Invalid input"),
    "validation_error": (422, "Invalid request"),
    "unsupported_media": (415, "Unsupported media type"),
    "media_too_large": (413, "Media too large"),
    "payload_too_large": (413, "Payload too large"),
    "too_many_items": (413, "Too many inputs"),
    "too_costly": (413, "Request too costly"),  # over a per-request cost limit (service.admission)
    "conflict": (409, "Conflict"),  # a collection that exists; stored vectors of another space
    "auth": (401, "Unauthorized"),
    "overloaded": (429, "Overloaded"),
    "not_ready": (503, "Not ready"),
    "insufficient_storage": (507, "Insufficient storage"),  # the disk is full; the write was rolled back
    "collections_off": (501, "Not implemented"),  # a server that keeps no collections (service.collections_off)
    # configuration problems: the operator's to fix, reported to the client as a plain 500
    "invalid_checkpoint": (500, "Internal server error"),
    "invalid_description": (500, "Internal server error"),
}
DEFAULT_CLIENT_ERROR = (422, "Invalid request")  # a FreeBindError of a kind not in the table


class ServiceError(FreeBindError):
    """An error the service raises on purpose; `headers` travel with the response."""

    headers: dict[str, str] = {}


class InvalidInput(ServiceError, ValueError):
    kind = "invalid_input"


class TooManyItems(ServiceError, ValueError):
    kind = "too_many_items"


class TooLarge(ServiceError, ValueError):
    """Part of a request over a documented size limit (an item's metadata)."""

    kind = "payload_too_large"


class Unauthorized(ServiceError):
    kind = "auth"
    headers = {"WWW-Authenticate": "Bearer"}


class Overloaded(ServiceError):
    kind = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 1):
        super().__init__(message)
        self.headers = {"Retry-After": str(int(retry_after_s))}


class NotReady(ServiceError):
    kind = "not_ready"

    def __init__(self, message: str, *, retry_after_s: int = 5):
        super().__init__(message)
        self.headers = {"Retry-After": str(int(retry_after_s))}


class PayloadTooLarge(StarletteHTTPException):
    """Raised from inside body reading: FastAPI re-raises HTTPExceptions untouched (anything else
    there would become a 400), so this one reaches our handler as a 413."""

    kind = "payload_too_large"

    def __init__(self, limit: int):
        super().__init__(413, f"request body is larger than the limit of {limit} bytes (FREEBIND_MAX_BODY_BYTES)")


def status_of(exc: FreeBindError) -> tuple[int, str]:
    return STATUS.get(exc.kind, DEFAULT_CLIENT_ERROR)


def request_id(scope: Scope) -> str | None:
    return scope.get("state", {}).get("request_id")


def problem(scope: Scope, status: int, title: str, detail: str, kind: str, *, headers: dict[str, str] | None = None,
            **extra: Any) -> JSONResponse:
    """The problem document for the request in `scope`; under /v1/ it also carries OpenAI's `error`
    member, which OpenAI clients read their error message from."""
    body: dict[str, Any] = {"type": f"urn:freebind:problem:{kind}", "title": title, "status": status, "detail": detail}
    body.update({k: v for k, v in extra.items() if v is not None})
    out_headers = dict(headers or {})
    rid = request_id(scope)
    if rid is not None:
        body["request_id"] = out_headers["X-Request-ID"] = rid
    if scope.get("path", "").startswith("/v1/"):
        # OpenAI's `code` is a string or null (typed clients reject a number); the kind says what happened
        body["error"] = {"message": detail, "type": kind, "code": kind, "param": None}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=out_headers)


def _count(request: Request, kind: str) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.errors.labels(kind).inc()


async def freebind_error_handler(request: Request, exc: FreeBindError) -> JSONResponse:
    status, title = status_of(exc)
    _count(request, exc.kind)
    if status == 500:  # a configuration or store failure: ours to log, not the client's to read
        log.error("request %s failed: %s", request_id(request.scope), exc, exc_info=exc)
        return internal_error(request.scope)
    items = getattr(exc, "items", None)  # every bad input of the request, when there was more than one
    return problem(request.scope, status, title, exc.message, exc.kind, headers=getattr(exc, "headers", None),
                   index=exc.index, errors=items or None)


async def validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    _count(request, "validation_error")
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()][:20]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"][1:]) or "body"
    loc = first["loc"]
    index = loc[2] if len(loc) > 2 and loc[1] in ("inputs", "input") and isinstance(loc[2], int) else None
    return problem(request.scope, 422, "Invalid request", f"{where}: {first['msg']}", "validation_error",
                   index=index, errors=errors)


async def http_error_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    kind = getattr(exc, "kind", None) or f"http_{exc.status_code}"
    _count(request, kind)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 400 and exc.__cause__ is not None:  # FastAPI's "error parsing the body": say why
        detail = f"{detail}: {_body_error(exc.__cause__)}"
    return problem(request.scope, exc.status_code, _reason(exc.status_code), detail, kind,
                   headers=getattr(exc, "headers", None))


def internal_error(scope: Scope) -> JSONResponse:
    """What a client sees of any failure of ours: the request id to quote, nothing internal."""
    return problem(scope, 500, "Internal server error", f"the server failed on this request; quote request id "
                   f"{request_id(scope)} when reporting it", "internal")


def _body_error(cause: BaseException) -> str:
    if isinstance(cause, UnicodeDecodeError):
        return "it is not valid UTF-8"
    if isinstance(cause, RecursionError):
        return "its JSON is nested too deeply"
    return "it is not readable as JSON"


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(FreeBindError, freebind_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
