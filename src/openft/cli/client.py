"""The user CLI's HTTP client of the public API (what the SDKs call, nothing private).

Configured like the SDKs: `OPENFT_BASE_URL` (with or without `/v1`), else
`OPENAI_BASE_URL`, else a local server; `OPENFT_API_KEY`, else `OPENAI_API_KEY`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx

from openft import sse_lines

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
RECONNECTS = 10


class ApiError(Exception):
    """An error answer, or no answer, as one readable line."""


def base_url(value: str | None = None) -> str:
    url = (
        value
        or os.environ.get("OPENFT_BASE_URL")
        or os.environ.get("OPENAI_BASE_URL")
        or DEFAULT_BASE_URL
    ).rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


def api_key(value: str | None = None) -> str:
    key = value or os.environ.get("OPENFT_API_KEY") or os.environ.get("OPENAI_API_KEY")
    if not key:
        raise ApiError("no API key: set OPENFT_API_KEY (or OPENAI_API_KEY), or pass --api-key")
    return key


class Client:
    def __init__(self, url: str | None = None, key: str | None = None) -> None:
        self.base_url = base_url(url)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key(key)}"},
            timeout=httpx.Timeout(60, read=None),
        )

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer, or `ApiError` with the server's message."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(f"cannot reach {self.base_url}: {exc}") from None
        if response.is_error:
            raise ApiError(_message(response))
        return response.json()

    def pages(self, path: str, params: dict[str, Any] | None = None) -> Iterator[Any]:
        """Every item of a cursor-paged list, in the list's order."""
        query = {"limit": 100, **(params or {})}
        while True:
            page = self.request("GET", path, params=query)
            yield from page["data"]
            if not page["has_more"] or not page["data"]:
                return
            query["after"] = page["data"][-1]["id"]

    def follow(self, job_id: str, after: str | None = None) -> Iterator[dict[str, Any]]:
        """The job's events as they are committed, oldest first (after the event `after`),
        until the job has ended: its event stream, reconnected from the last event
        received if the connection drops."""
        last = after
        for _attempt in range(RECONNECTS):
            headers = {"Accept": "text/event-stream"}
            if last is not None:
                headers["Last-Event-ID"] = last
            try:
                path = f"/fine_tuning/jobs/{job_id}/events"
                with self._http.stream(
                    "GET", path, params={"stream": "true"}, headers=headers
                ) as r:
                    for event in _sse_objects(r):
                        if event is None:
                            return
                        last = event["id"]
                        yield event
            except httpx.TransportError:
                pass
            time.sleep(1)  # the stream ended early (a server restarting): go on after `last`
        raise ApiError(f"lost the event stream of {job_id} {RECONNECTS} times")

    def stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST `body` with `stream: true` and yield the server-sent JSON objects until
        `data: [DONE]` (an `error` object in the stream raises `ApiError`)."""
        try:
            with self._http.stream("POST", path, json={**body, "stream": True}) as r:
                for item in _sse_objects(r):
                    if item is None:
                        return
                    if "error" in item:
                        raise ApiError(item["error"].get("message", "the stream failed"))
                    yield item
        except httpx.TransportError as exc:
            raise ApiError(f"cannot reach {self.base_url}: {exc}") from None
        raise ApiError("the stream ended before data: [DONE]")


def _sse_objects(response: httpx.Response) -> Iterator[dict[str, Any] | None]:
    """The JSON of each `data:` line of a server-sent event stream; None for `[DONE]`.
    `ApiError` with the server's message if it refused the request."""
    if response.is_error:
        response.read()
        raise ApiError(_message(response))
    for line in sse_lines.lines(response.iter_bytes()):
        if line == "data: [DONE]":
            yield None
            return
        if line.startswith("data: "):
            yield json.loads(line.removeprefix("data: "))


def _message(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        where = f" ({error['param']})" if error.get("param") else ""
        return f"{response.status_code}: {error['message']}{where}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code}: {response.text[:200] or response.reason_phrase}"
