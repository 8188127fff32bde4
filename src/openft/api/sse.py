"""A job's events as server-sent events: `id:` the event id, `data:` the event's JSON
exactly as the list endpoint has it, oldest first; `: keep-alive` comments while nothing
happens; `data: [DONE]` once the job has ended and every event is out."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson

from openft.domain.entities import Event
from openft.services.live import LiveEvents, StreamEnded
from openft.wire import event_json

MEDIA_TYPE = "text/event-stream"
KEEPALIVE = b": keep-alive\n\n"
DONE = b"data: [DONE]\n\n"


def frame(event: Event) -> bytes:
    return b"id: %s\ndata: %s\n\n" % (event.id.encode(), orjson.dumps(event_json(event)))


async def event_stream(live: LiveEvents, job_id: str, seen: int) -> AsyncIterator[bytes]:
    try:
        async for batch in live.follow(job_id, seen):
            yield b"".join(frame(event) for event in batch) if batch else KEEPALIVE
    except StreamEnded as ended:
        # Ended without [DONE]: the client reconnects with Last-Event-ID and goes on.
        yield b": %s Reconnect with Last-Event-ID.\n\n" % str(ended).encode()
        return
    yield DONE
