"""The web console: static files (`openft/console/`, plain ES modules and a vendored
uPlot) served by `openft serve` at `/`. It talks to the server through the public API
only, with the key a person enters, so it shows exactly what a client sees."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

import openft

CONSOLE = Path(openft.__file__).parent / "console"
# The page holds an API key: it runs only its own scripts and talks only to this server.
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def mount_console(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def console() -> FileResponse:
        return FileResponse(
            CONSOLE / "index.html",
            headers={"content-security-policy": POLICY, "cache-control": "no-cache"},
        )

    app.mount("/console", StaticFiles(directory=CONSOLE), name="console")
