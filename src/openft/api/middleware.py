"""Pure ASGI middleware: cheap enough to sit in front of every request."""

from __future__ import annotations

import uuid

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
