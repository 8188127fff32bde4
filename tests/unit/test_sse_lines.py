"""Server-sent event lines split as the specification says (openft.sse_lines), not as
`str.splitlines` does: a chunk's JSON may hold U+2028, U+2029 or NEL unescaped."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from openft.cli.client import _sse_objects
from openft.sse_lines import LineSplitter, alines, lines

TEXT = "a\u2028b\u2029c\x85d\x0be\x1cf é"


def test_lines_end_at_cr_lf_and_crlf_only_across_chunk_boundaries() -> None:
    stream = f"data: {TEXT}\r\n\r\nid: 1\rdata: x\n\n".encode()
    for size in (1, 2, 3, 7, len(stream)):  # every cut: inside é, between CR and LF, …
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert list(lines(chunks)) == [f"data: {TEXT}", "", "id: 1", "data: x", ""], size


def test_a_line_not_ended_when_the_stream_ends_is_dropped() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"data: 1\ndata: 2") == ["data: 1"]
    assert splitter.feed(b"\r") == []  # maybe half of CR LF
    assert splitter.feed(b"data: 3") == ["data: 2"]


@pytest.mark.asyncio
async def test_async_lines() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for chunk in (b'data: {"x": "', TEXT.encode(), b'"}\n\n'):
            yield chunk

    assert [line async for line in alines(chunks())] == [f'data: {{"x": "{TEXT}"}}', ""]


def test_the_cli_reads_a_chunk_holding_line_separators_whole() -> None:
    # `openft chat` on a model whose answer holds U+2028: one chunk, not a broken line.
    chunk = {"choices": [{"index": 0, "delta": {"content": TEXT}}]}
    body = f"data: {json.dumps(chunk, ensure_ascii=False)}\n\ndata: [DONE]\n\n".encode()
    response = httpx.Response(200, content=body)
    assert list(_sse_objects(response)) == [chunk, None]
