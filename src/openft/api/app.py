"""The application factory: a FastAPI app over already-built services."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import openft
from openft.api.errors import install_error_handlers
from openft.api.middleware import RequestIdMiddleware
from openft.api.routes import files, health, jobs, models
from openft.services.container import Services

log = logging.getLogger(__name__)


def _revalidate_loop(services: Services, every_seconds: int, stop: threading.Event) -> None:
    """Validate jobs that a crash left in `validating_files`; any replica may do it."""
    while not stop.wait(every_seconds):
        try:
            services.jobs.validate_stale(older_than_seconds=every_seconds)
        except Exception:  # the loop must outlive a failing database; it retries next tick
            log.exception("revalidation sweep failed")


def create_app(services: Services, *, revalidate_every_seconds: int = 30) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        sweeper = threading.Thread(
            target=_revalidate_loop,
            args=(services, revalidate_every_seconds, stop),
            name="openft-revalidate",
            daemon=True,
        )
        sweeper.start()
        try:
            yield
        finally:
            stop.set()
            sweeper.join(timeout=5)

    app = FastAPI(
        title="openft",
        version=openft.__version__,
        description="A self-hosted, OpenAI-compatible fine-tuning service.",
        lifespan=lifespan,
    )
    app.state.services = services
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware)
    for module in (health, files, jobs, models):
        app.include_router(module.router)
    return app
