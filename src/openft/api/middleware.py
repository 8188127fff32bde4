"""Pure ASGI middleware: cheap enough to sit in front of every request."""

from __future__ import annotations

import uuid

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "x-request-id"
_HEADER = REQUEST_ID_HEADER.encode()


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
            or f"req_{uuid.uuid4().hex}".encode()
        )
        # For the error handlers' log lines (`request.state.request_id`).
        scope.setdefault("state", {})["request_id"] = request_id.decode("latin-1")

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
            response = JSONResponse(
                {
                    "error": {
                        "message": "The URL holds a NUL (%00) character, which no id, "
                        "cursor or filter can contain.",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "invalid_value",
                    }
                },
                status_code=400,
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
