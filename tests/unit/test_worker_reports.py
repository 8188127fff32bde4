"""The layer that applies workers' plain reports before routing (api/worker_reports.py):
what it takes itself, and that everything else reaches the route with its body intact."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, cast

from starlette.types import Message

from openft.api.worker_reports import WorkerReports
from openft.domain.entities import EventDraft, KeyScope, Principal
from openft.domain.errors import LeaseLost
from openft.services.container import Services

KEY = "sk-openft-cached"
PRINCIPAL = Principal("proj_1", KeyScope.WORKER, "key_1")


class Keys:
    def cached(self, key: str | None) -> Principal | None:
        return PRINCIPAL if key == KEY else None


class Worker:
    def __init__(self) -> None:
        self.reports: list[tuple[str, str, int, list[str]]] = []
        self.refuse = False

    async def report_async(
        self, job_id: str, holder: str, batch: int, drafts: Sequence[EventDraft]
    ) -> bool:
        if self.refuse:
            raise LeaseLost("lost", code="lease_lost")
        self.reports.append((job_id, holder, batch, [d.message for d in drafts]))
        return True


class Services_:
    def __init__(self) -> None:
        self.keys = Keys()
        self.worker = Worker()


def call(
    layer: WorkerReports,
    body: bytes,
    *,
    path: str = "/v1/worker/jobs/ftjob-1/events",
    headers: dict[str, str] | None = None,
    query: bytes = b"",
) -> tuple[list[Message], bytes | None]:
    """What the layer sent, and the body the route read (None: the route was not called)."""
    given = {
        "authorization": f"Bearer {KEY}",
        "openft-worker": "w-1",
        "content-type": "application/json",
        "content-length": str(len(body)),
        **(headers or {}),
    }
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": query,
        "headers": [(k.encode(), v.encode()) for k, v in given.items()],
    }
    chunks = [body[:3], body[3:]]  # the body in two messages, as a server may send it
    sent: list[Message] = []
    routed: list[bytes] = []

    async def receive() -> Message:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: Message) -> None:
        sent.append(message)

    async def route(scope: Any, receive: Any, send: Any) -> None:
        read = b""
        while True:
            message = await receive()
            read += message.get("body", b"")
            if not message.get("more_body"):
                break
        routed.append(read)

    layer.app = route
    asyncio.run(layer(scope, receive, send))
    return sent, routed[0] if routed else None


def make() -> tuple[WorkerReports, Worker]:
    services = Services_()
    layer = WorkerReports(lambda *_: None, cast(Services, services))  # type: ignore[arg-type]
    return layer, services.worker


REPORT = json.dumps({"batch": 3, "events": [{"message": "a"}, {"message": "b"}]}).encode()


def test_a_plain_report_is_applied_here() -> None:
    layer, worker = make()
    sent, routed = call(layer, REPORT)
    assert routed is None
    assert worker.reports == [("ftjob-1", "key_1/w-1", 3, ["a", "b"])]
    assert sent[0]["status"] == 200
    assert sent[1]["body"] == b'{"applied":true}'


def test_everything_else_reaches_the_route_with_its_body() -> None:
    cases: list[dict[str, Any]] = [
        {"headers": {"authorization": "Bearer sk-openft-unknown"}},  # the route verifies it
        {"headers": {"openft-worker": ""}},
        {"headers": {"content-type": "text/plain"}},
        {"query": b"x=1"},
        {"path": "/v1/worker/jobs/ftjob-1/heartbeat"},
    ]
    for options in cases:
        layer, worker = make()
        sent, routed = call(layer, REPORT, **options)
        assert routed == REPORT and sent == [] and worker.reports == [], options
    for body in (b'{"batch": 0, "events": []}', b"not json", b'{"batch": 1}'):
        layer, worker = make()
        assert call(layer, body)[1] == body and worker.reports == []


def test_a_refused_report_is_left_to_the_route_to_answer() -> None:
    layer, worker = make()
    worker.refuse = True
    sent, routed = call(layer, REPORT)
    assert routed == REPORT and sent == []
