"""The events page (`GET /v1/fine_tuning/jobs/{id}/events`), answered before routing.

It is the hottest read openft serves: a dashboard or an SDK polls it, several times a
second per job. Answered by the route, FastAPI's routing, dependency solving and
exception layers cost about as much CPU as the page itself (bench/events_bench.py), so
this pure ASGI layer answers the common request itself: a cached key, `after` and
`limit` only, no stream. It calls the same service and writes the same bytes as the
route (`events_list`, orjson). Everything else goes on to the route unchanged: a key
seen for the first time (the route verifies and caches it), a stream, a parameter it
does not know, one given twice or out of range, and any error (the route reads again
and renders it in OpenAI's envelope), so no answer but the plain page is made twice.

It sits inside the app's other middleware: every page still gets its request id, its
metrics (under the route's template) and its access log line.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from openft import logs
from openft.api.routes import jobs
from openft.domain.entities import KeyScope
from openft.domain.errors import OpenFTError
from openft.services.container import Services
from openft.services.events import DEFAULT_LIMIT, MAX_LIMIT
from openft.wire import events_list

PREFIX = "/v1/fine_tuning/jobs/"
SUFFIX = "/events"
_HEADERS = [(b"content-type", b"application/json")]


class EventsPage:
    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services
        # The route it answers for: the metrics label its pages by its template.
        self._route = next(
            route
            for route in jobs.router.routes
            if isinstance(route, APIRoute) and route.endpoint is jobs.list_events
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            if path.startswith(PREFIX) and path.endswith(SUFFIX) and not scope.get("root_path"):
                job_id = path[len(PREFIX) : -len(SUFFIX)]
                if job_id and "/" not in job_id:
                    body = await self._page(scope, job_id)
                    if body is not None:
                        await send(
                            {
                                "type": "http.response.start",
                                "status": 200,
                                "headers": [
                                    (b"content-length", b"%d" % len(body)),
                                    *_HEADERS,
                                ],
                            }
                        )
                        await send({"type": "http.response.body", "body": body})
                        return
        await self.app(scope, receive, send)

    async def _page(self, scope: Scope, job_id: str) -> bytes | None:
        """The page's JSON, or None: the route answers this request."""
        params = _params(scope["query_string"])
        if params is None:
            return None
        after, limit = params
        key = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if key is not None:
                    return None  # two: the route decides
                key = value
            elif name == b"accept" and b"text/event-stream" in value:
                return None
        principal = self.services.keys.cached(_bearer(key))
        if principal is None or principal.scope is KeyScope.ADMIN:
            return None
        try:
            page = await self.services.events.list_async(
                principal, job_id, after=after, limit=limit
            )
        except OpenFTError:
            return None
        # As the route would have: its metrics label, and the log's context.
        scope["route"] = self._route
        logs.bind(project_id=principal.project_id or None, job_id=job_id)
        return orjson.dumps(events_list(page))


def _params(query_string: bytes) -> tuple[str | None, int] | None:
    """`after` and `limit`, when they are all the query holds, each at most once, and
    `limit` is plain digits within bounds; else None."""
    after: str | None = None
    limit: int | None = None
    if not query_string:
        return None, DEFAULT_LIMIT
    seen: set[str] = set()
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name in seen:
            return None
        seen.add(name)
        if name == "after":
            after = value
        elif name == "limit" and value.isascii() and value.isdigit():
            limit = int(value)
            if limit > MAX_LIMIT:
                return None
        else:
            return None
    return after, DEFAULT_LIMIT if limit is None else limit


def _bearer(value: Any) -> str | None:
    """The key of an `Authorization: Bearer KEY` header, as FastAPI's HTTPBearer reads it."""
    if not isinstance(value, bytes):
        return None
    scheme, _, key = value.decode("latin-1").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        return None
    return key
