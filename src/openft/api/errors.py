"""Every error leaves the server in OpenAI's envelope: {"error": {message, type, param, code}}.

Validation failures (422) also carry FastAPI's `detail` list beside `error`, so clients
written for FastAPI-style APIs (the Nebius seed) read the same body.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from openft.api.middleware import REQUEST_ID_HEADER
from openft.domain.errors import OpenFTError
from openft.wire import ErrorResponse, ValidationErrorResponse

log = logging.getLogger(__name__)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
WORKER_PATH = "/v1/worker/"


_DESCRIPTIONS = {
    400: "A request that cannot be honoured (a bad cursor, file, model or transition)",
    401: "A missing or wrong API key",
    403: "A key whose scope does not allow the operation",
    404: "No such object in the key's project",
    409: "The job changed meanwhile and nothing was done (workers: the hold is lost)",
    413: "An upload over the server's limit",
    422: "A parameter of the wrong type or out of range",
    503: "The model cannot be run on this server now",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of a route, for /openapi.json."""
    return {
        status: {
            "model": ValidationErrorResponse if status == 422 else ErrorResponse,
            "description": _DESCRIPTIONS[status],
        }
        for status in statuses
    }


def error_json(exc: OpenFTError) -> ErrorResponse:
    """An openft error in OpenAI's envelope: a response's body, or an event in a stream
    that has already begun."""
    return {
        "error": {
            "message": exc.message,
            "type": exc.error_type,
            "param": exc.param,
            "code": exc.code,
        }
    }


def envelope(
    status: int,
    message: str,
    *,
    type_: str,
    param: str | None = None,
    code: str | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}, **extra}
    return JSONResponse(body, status_code=status)


def _param(loc: tuple[Any, ...]) -> str | None:
    # FastAPI locations start with where the value came from: ("query", "limit").
    parts = (
        [str(part) for part in loc[1:]]
        if loc and loc[0] in ("query", "body", "path", "header")
        else [str(p) for p in loc]
    )
    return ".".join(parts) or None


def _validation_message(error: dict[str, Any]) -> str:
    param = _param(tuple(error.get("loc", ())))
    if error.get("type") == "json_invalid":
        return "We could not parse the JSON body of your request: it is not valid JSON."
    if error.get("type") == "missing":
        return f"Missing required parameter: '{param}'."
    if error.get("type") == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}"
    return f"Invalid value for '{param}': {error.get('msg', 'invalid')}."


def _log_refusal(request: Request, status: int, message: str) -> None:
    """One line per server error, and per refused worker call (a worker turns those into
    a failed job that names the request id): how an operator finds the cause."""
    if status >= 500 or request.url.path.startswith(WORKER_PATH):
        log.warning(
            "%s %s -> %d (request %s): %s",
            request.method,
            request.url.path,
            status,
            getattr(request.state, "request_id", "-"),
            message,
        )


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at this path (Starlette's own 405 names only the
    methods of the first route that matched the path, when several share it)."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OpenFTError)
    async def _openft(request: Request, exc: OpenFTError) -> JSONResponse:
        _log_refusal(request, exc.status_code, exc.message)
        return JSONResponse(error_json(exc), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        first = errors[0] if errors else {}
        missing = first.get("type") == "missing"
        message = "; ".join(_validation_message(error) for error in errors) or "Invalid request."
        _log_refusal(request, 422, message)
        return envelope(
            422,
            message,
            type_="invalid_request_error",
            param=_param(tuple(first.get("loc", ()))),
            code="missing_required_parameter" if missing else "invalid_value",
            detail=jsonable_encoder(errors, exclude={"url", "ctx", "input"}),
        )

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "Request failed."
        if exc.status_code == 404:
            message = "Invalid URL: no such route on this server."
        response = envelope(
            exc.status_code,
            message,
            type_="invalid_request_error",
            code=_HTTP_CODES.get(exc.status_code),
        )
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            response.headers["allow"] = ", ".join(_allowed_methods(request))
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", "-")
        log.error(
            "%s %s -> 500 (request %s): %s: %s",
            request.method,
            request.url.path,
            request_id,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        response = envelope(
            500,
            "The server had an error while processing your request. Sorry about that!",
            type_="server_error",
        )
        # This handler runs outside every middleware (Starlette's last resort), so it
        # names the request itself.
        response.headers[REQUEST_ID_HEADER] = request_id
        return response
