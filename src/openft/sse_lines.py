"""The lines of a server-sent event stream as the specification splits them: at CR LF, LF
or CR only. httpx's `iter_lines` splits as `str.splitlines` does, also at U+2028, U+2029,
NEL (U+0085) and a few control characters, which JSON leaves unescaped inside a string:
a model's answer holding one of them would cut its chunk's `data:` line in two. Used by
the clients of streams openft reads (the CLI's `chat`, the vLLM engine)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator

_END = re.compile(rb"\r\n|\r|\n")


class LineSplitter:
    """Bytes in, whole lines out (without their ends), across chunk boundaries. A line not
    ended when the stream ends is dropped, as the specification drops an event not ended."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, chunk: bytes) -> list[str]:
        buffer = self._rest + chunk
        # A CR at the end may be the first half of CR LF: it waits for the next chunk.
        held = b"\r" if buffer.endswith(b"\r") else b""
        *lines, rest = _END.split(buffer[: len(buffer) - len(held)])
        self._rest = rest + held
        # Split on line ends first, decoded after: no end byte is part of a UTF-8 character.
        return [line.decode("utf-8", errors="replace") for line in lines]


def lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """The lines of a stream's bytes (`httpx.Response.iter_bytes()`)."""
    splitter = LineSplitter()
    for chunk in chunks:
        yield from splitter.feed(chunk)


async def alines(chunks: AsyncIterable[bytes]) -> AsyncIterator[str]:
    """`lines` for an async stream (`httpx.Response.aiter_bytes()`)."""
    splitter = LineSplitter()
    async for chunk in chunks:
        for line in splitter.feed(chunk):
            yield line
