"""A worker's report (`POST /v1/worker/jobs/{id}/events`), answered before routing.

Every running job's worker sends one every half second: with a hundred jobs, FastAPI's
routing and dependency solving (the key, its scope, the worker's header, the body) cost
more of the server's core than writing the report (bench/live_bench.py). This layer takes
the plain report itself: a cached worker key, one `OpenFT-Worker` header, a JSON body of
a known length that `EventBatch` accepts. It applies it through the same service call as
the route and answers the same bytes. Anything else, and any refusal (a lost lease, an
unknown job), goes to the route with the body it sent: a refused report wrote nothing,
and an applied batch is never applied twice (its number says so), so the route's answer
is the one the worker gets, in OpenAI's envelope.
"""

from __future__ import annotations

import orjson
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from openft import logs
from openft.api.prerouted import (
    answer_json,
    cached_principal,
    header,
    job_in_path,
    replayed,
    route_of,
)
from openft.api.routes import worker
from openft.domain.entities import KeyScope
from openft.domain.errors import OpenFTError
from openft.services.container import Services
from openft.worker.protocol import MAX_WORKER_ID, WORKER_HEADER, BatchReply, EventBatch

PREFIX = "/v1/worker/jobs/"
SUFFIX = "/events"
# A report's body at most (a batch of events is a few KiB): larger ones go to the route.
MOST_BYTES = 1 << 20
_WORKER = WORKER_HEADER.lower().encode()
_WORKERS = frozenset({KeyScope.WORKER})


class WorkerReports:
    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services
        self._route = route_of(worker.router, worker.report_events)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        job_id = job_in_path(scope, "POST", PREFIX, SUFFIX)
        if job_id is None or not await self._report(scope, receive, send, job_id):
            await self.app(scope, receive, send)

    async def _report(self, scope: Scope, receive: Receive, send: Send, job_id: str) -> bool:
        """Whether this request was answered here (else it goes on, untouched, to the
        route: its body is then handed on by `_route_with`)."""
        if scope["query_string"] or header(scope, b"content-type") != b"application/json":
            return False
        length = header(scope, b"content-length")
        worker_id = header(scope, _WORKER)
        principal = cached_principal(self.services, scope, _WORKERS)
        if (
            principal is None
            or worker_id is None
            or length is None
            or not length.isdigit()
            or int(length) > MOST_BYTES
        ):
            return False
        name = worker_id.decode("latin-1")
        if not 1 <= len(name) <= MAX_WORKER_ID:
            return False
        body = await _read(receive)
        if body is None:
            return True  # the client went away: nothing to answer
        try:
            batch = EventBatch.model_validate_json(body)
        except ValidationError:
            batch = None
        if batch is not None:
            try:
                applied = await self.services.worker.report_async(
                    job_id, principal.holder(name), batch.batch, [e.draft() for e in batch.events]
                )
            except OpenFTError:
                pass  # the route applies it again, is refused again, and says why
            else:
                # As the route would have: its metrics label, and the log's context.
                scope["route"] = self._route
                logs.bind(project_id=principal.project_id or None, job_id=job_id)
                reply = BatchReply(applied=applied).model_dump(mode="json")
                await answer_json(send, orjson.dumps(reply))
                return True
        await self.app(scope, replayed(body, receive), send)
        return True


async def _read(receive: Receive) -> bytes | None:
    """The request's whole body; None if the client disconnected first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
