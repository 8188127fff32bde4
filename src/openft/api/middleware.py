"""Pure ASGI middleware: cheap enough to sit in front of every request."""

from __future__ import annotations

import os

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openft import logs

REQUEST_ID_HEADER = "x-request-id"
_HEADER = REQUEST_ID_HEADER.encode()


def _refusal(status: int, message: str, code: str) -> JSONResponse:
    """OpenAI's error envelope, for a request refused before it reaches a route (the
    app's handlers render the rest: api/errors.py)."""
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    return JSONResponse({"error": error}, status_code=status)


class RequestIdMiddleware:
    """Give every response an `x-request-id`: the caller's, if it sent one, else a new one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = (
            next((value for name, value in scope["headers"] if name == _HEADER), None)
            or b"req_" + os.urandom(16).hex().encode()  # 32 hex digits (uuid4 cost 4x)
        )
        # For the error handlers' log lines (`request.state.request_id`).
        scope.setdefault("state", {})["request_id"] = request_id.decode("latin-1")
        # And for every log line of this request (its task's context), uvicorn's included.
        logs.bind(request_id=request_id.decode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (_HEADER, request_id)]
            await send(message)

        await self.app(scope, receive, send_with_id)


class RefuseNul:
    """Answer 400 to a path or query holding a NUL character: no text openft keeps may
    contain one (PostgreSQL's cannot), so it is refused the same way on every database."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and ("\0" in scope["path"] or b"%00" in scope["query_string"]):
            message = (
                "The URL holds a NUL (%00) character, which no id, cursor or filter can contain."
            )
            await _refusal(400, message, "invalid_value")(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _streamed_upload(path: str) -> bool:
    """Routes that take a file (spooled to disk, with limits of their own)."""
    return path == "/v1/files" or (
        path.startswith("/v1/worker/jobs/") and path.endswith(("/checkpoints", "/complete"))
    )


class BodyLimit:
    """Refuse (413, in OpenAI's envelope) a request body over `max_bytes` on every route
    but the file uploads: by its Content-Length before a byte is read, else as its bytes
    arrive. No JSON request (a chat prompt included) is read whole past the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> HTTPException:
        return HTTPException(
            413, f"The request body exceeds this server's limit of {self.max_bytes} bytes."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _streamed_upload(scope["path"]):
            await self.app(scope, receive, send)
            return
        declared = next((v for n, v in scope["headers"] if n == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            refusal = _refusal(413, self._too_large().detail, "request_too_large")
            await refusal(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # Raised into the app's body read: rendered as this 413 by its handler.
                    raise self._too_large()
            return message

        await self.app(scope, counted, send)
