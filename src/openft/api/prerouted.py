"""What the requests answered before routing share (api/events_page.py,
api/worker_reports.py): the hottest requests openft serves, for which FastAPI's routing,
dependency solving and exception layers would cost as much CPU as the answer itself.

Each such layer answers only the plain, common form of its request, with a key already
verified (cached), and hands everything else to the route unchanged: the route remains
the one place that renders an error."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.types import Message, Receive, Scope, Send

from openft.domain.entities import KeyScope, Principal
from openft.services.container import Services

_JSON = (b"content-type", b"application/json")


def route_of(router: APIRouter, endpoint: object) -> APIRoute:
    """The route a layer answers for: the metrics label its answers by its template."""
    return next(
        route
        for route in router.routes
        if isinstance(route, APIRoute) and route.endpoint is endpoint
    )


def job_in_path(scope: Scope, method: str, prefix: str, suffix: str) -> str | None:
    """The job id of a `method` request to `prefix` + id + `suffix`; None for any other
    request (and under a root path, which the routes resolve)."""
    if scope["type"] != "http" or scope["method"] != method or scope.get("root_path"):
        return None
    path: str = scope["path"]
    if not (path.startswith(prefix) and path.endswith(suffix)):
        return None
    job_id = path[len(prefix) : len(path) - len(suffix)]
    return job_id if job_id and "/" not in job_id else None


def header(scope: Scope, name: bytes) -> bytes | None:
    """A request header sent exactly once; None when absent or sent twice (the route
    decides then)."""
    found = None
    for key, value in scope["headers"]:
        if key == name:
            if found is not None:
                return None
            found = value
    return found


def cached_principal(
    services: Services, scope: Scope, scopes: frozenset[KeyScope]
) -> Principal | None:
    """The caller, when its key was verified recently and has one of these scopes; else
    None (the route verifies a key it has not seen, and refuses one it may not use)."""
    principal = services.keys.cached(bearer(header(scope, b"authorization")))
    if principal is None or principal.scope not in scopes:
        return None
    return principal


def bearer(value: bytes | None) -> str | None:
    """The key of an `Authorization: Bearer KEY` header, as FastAPI's HTTPBearer reads it."""
    if value is None:
        return None
    scheme, _, key = value.decode("latin-1").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        return None
    return key


async def answer_json(send: Send, body: bytes) -> None:
    """A 200 with a JSON body, as the routes' `JSON` response sends it."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"%d" % len(body)), _JSON],
        }
    )
    await send({"type": "http.response.body", "body": body})


def replayed(body: bytes, receive: Receive) -> Receive:
    """`receive` for a route that is handed a request whose body was already read here."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # past the body: a disconnect, as the server sends it

    return again
