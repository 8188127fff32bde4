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

from urllib.parse import parse_qsl

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from openft import logs
from openft.api.prerouted import answer_json, cached_principal, job_in_path, route_of
from openft.api.routes import jobs
from openft.domain.entities import KeyScope
from openft.domain.errors import OpenFTError
from openft.services.container import Services
from openft.services.events import DEFAULT_LIMIT, MAX_LIMIT
from openft.wire import events_list

PREFIX = "/v1/fine_tuning/jobs/"
SUFFIX = "/events"
# Any key but an admin's (the organisation's: it reads no project's events).
_READERS = frozenset({KeyScope.PROJECT, KeyScope.WORKER})


class EventsPage:
    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services
        self._route = route_of(jobs.router, jobs.list_events)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        job_id = job_in_path(scope, "GET", PREFIX, SUFFIX)
        body = await self._page(scope, job_id) if job_id else None
        if body is None:
            await self.app(scope, receive, send)
        else:
            await answer_json(send, body)

    async def _page(self, scope: Scope, job_id: str) -> bytes | None:
        """The page's JSON, or None: the route answers this request."""
        params = _params(scope["query_string"])
        if params is None:
            return None
        after, limit = params
        if any(
            name == b"accept" and b"text/event-stream" in value for name, value in scope["headers"]
        ):
            return None
        principal = cached_principal(self.services, scope, _READERS)
        if principal is None:
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
