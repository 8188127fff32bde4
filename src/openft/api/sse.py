"""A job's events as server-sent events: `id:` the event id, `data:` the event's JSON
exactly as the list endpoint has it, oldest first; `: keep-alive` comments while nothing
happens; `data: [DONE]` once the job has ended and every event is out."""

from __future__ import annotations

import struct
import zlib
from collections.abc import AsyncIterator

import orjson

from openft.domain.entities import Event
from openft.services.live import Batch, LiveEvents, StreamEnded
from openft.wire import event_json

MEDIA_TYPE = "text/event-stream"
# Every stream's headers: never cached, never buffered by a proxy (nginx reads the last).
STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
KEEPALIVE = b": keep-alive\n\n"
DONE = b"data: [DONE]\n\n"


def frame(event: Event) -> bytes:
    body = event_json(event)  # the id is made once, for the `id:` line and the JSON
    return b"id: %s\ndata: %s\n\n" % (body["id"].encode(), orjson.dumps(body))


async def event_stream(
    live: LiveEvents, job_id: str, seen: int, *, gzip: bool = False
) -> AsyncIterator[bytes]:
    """The stream's chunks, gzip-compressed if `gzip`. A batch that the job's feed handed
    to all its followers is framed (and compressed) once, by the first that sends it."""
    member = _GzipMember() if gzip else None

    def chunk(body: bytes, shared: dict[str, bytes] | None = None) -> bytes:
        if member is None:
            return body
        deflated = shared.get("deflated") if shared is not None else None
        if deflated is None:
            deflated = _deflate(body)
            if shared is not None:
                shared["deflated"] = deflated
        return member.add(body, deflated)

    try:
        async for batch in live.follow(job_id, seen):
            if not batch:
                yield chunk(KEEPALIVE, _KEEPALIVE_SHARED)
                continue
            shared = batch.encoded if isinstance(batch, Batch) else None
            body = shared.get("frames") if shared is not None else None
            if body is None:
                body = b"".join([frame(event) for event in batch])
                if shared is not None:
                    shared["frames"] = body
            yield chunk(body, shared)
    except StreamEnded as ended:
        # Ended without [DONE]: the client reconnects with Last-Event-ID and goes on.
        ending = b": %s Reconnect with Last-Event-ID.\n\n" % str(ended).encode()
        yield chunk(ending) + (member.end() if member else b"")
        return
    yield chunk(DONE) + (member.end() if member else b"")


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header takes gzip (and does not refuse it with q=0)."""
    for item in accept_encoding.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


# A gzip stream is a header, deflate data, then the data's CRC-32 and length. Each chunk
# here is deflated on its own (a fresh compressor, ended by a sync flush on a byte
# boundary), so its compressed bytes do not depend on what the stream sent before: one
# job's followers share them, and each stream keeps only its own CRC and length. Level
# 1: a replay (a job's whole log, for its curves) is bound by the server's CPU, and JSON
# compresses well at any level; a follower decodes every chunk as soon as it arrives.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, no time, any OS
_FINAL_BLOCK = b"\x03\x00"  # an empty last block: what a compressor's final flush writes
_KEEPALIVE_SHARED: dict[str, bytes] = {}


def _deflate(body: bytes) -> bytes:
    compressor = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(body) + compressor.flush(zlib.Z_SYNC_FLUSH)


class _GzipMember:
    """One stream's gzip framing around chunks deflated apart."""

    def __init__(self) -> None:
        self._crc = 0
        self._size = 0
        self._head = _GZIP_HEADER  # sent with the first chunk

    def add(self, body: bytes, deflated: bytes) -> bytes:
        self._crc = zlib.crc32(body, self._crc)
        self._size += len(body)
        head, self._head = self._head, b""
        return head + deflated

    def end(self) -> bytes:
        trailer = struct.pack("<II", self._crc, self._size & 0xFFFFFFFF)
        head, self._head = self._head, b""
        return head + _FINAL_BLOCK + trailer
