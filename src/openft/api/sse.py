"""A job's events as server-sent events: `id:` the event id, `data:` the event's JSON
exactly as the list endpoint has it, oldest first; `: keep-alive` comments while nothing
happens; `data: [DONE]` once the job has ended and every event is out."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

import orjson

from openft.domain.entities import Event
from openft.services.live import LiveEvents, StreamEnded
from openft.wire import event_json

MEDIA_TYPE = "text/event-stream"
# Every stream's headers: never cached, never buffered by a proxy (nginx reads the last).
STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
KEEPALIVE = b": keep-alive\n\n"
DONE = b"data: [DONE]\n\n"


def frame(event: Event) -> bytes:
    body = event_json(event)  # the id is made once, for the `id:` line and the JSON
    return b"id: %s\ndata: %s\n\n" % (body["id"].encode(), orjson.dumps(body))


async def event_stream(live: LiveEvents, job_id: str, seen: int) -> AsyncIterator[bytes]:
    try:
        async for batch in live.follow(job_id, seen):
            yield b"".join(frame(event) for event in batch) if batch else KEEPALIVE
    except StreamEnded as ended:
        # Ended without [DONE]: the client reconnects with Last-Event-ID and goes on.
        yield b": %s Reconnect with Last-Event-ID.\n\n" % str(ended).encode()
        return
    yield DONE


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header takes gzip (and does not refuse it with q=0)."""
    for item in accept_encoding.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


async def gzipped(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The stream gzip-compressed, each chunk flushed as it comes (Z_SYNC_FLUSH): a
    follower decodes every event as soon as it is sent, and a long replay (a job's whole
    log, for its curves) travels at a tenth of its size. Level 1: the replay is bound by
    the server's CPU, and JSON compresses well at any level."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    async for chunk in chunks:
        yield compressor.compress(chunk) + compressor.flush(zlib.Z_SYNC_FLUSH)
    yield compressor.flush()
