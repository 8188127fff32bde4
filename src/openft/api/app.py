"""The application factory: a FastAPI app over already-built services."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI

import openft
from openft import logs
from openft.api.console import mount_console
from openft.api.errors import install_error_handlers
from openft.api.events_page import EventsPage
from openft.api.metrics import install_metrics
from openft.api.middleware import BodyLimit, RefuseNul, RequestIdMiddleware
from openft.api.routes import (
    chat,
    files,
    graders,
    health,
    jobs,
    models,
    permissions,
    webhooks,
    worker,
)
from openft.api.routes.series import router as series_router
from openft.api.worker_reports import WorkerReports
from openft.services.container import Services

log = logging.getLogger(__name__)


def _maintenance_loop(services: Services, every_seconds: int, stop: threading.Event) -> None:
    """Validate jobs that a crash left in `validating_files`, and recover running jobs
    whose worker went silent. Any number of replicas may run this: every change it
    makes is a compare-and-set."""
    while not stop.wait(every_seconds):
        try:
            services.jobs.validate_stale(older_than_seconds=every_seconds)
            services.worker.recover_stale()
        except Exception:  # the loop must outlive a failing database; it retries next tick
            log.exception("maintenance sweep failed")


def _webhook_loop(services: Services, every_seconds: float, stop: threading.Event) -> None:
    """Send due webhook deliveries. Any number of replicas may run this: each takes its
    deliveries under a lease."""
    while not stop.wait(every_seconds):
        try:
            while services.webhooks.deliver_due() and not stop.is_set():
                pass  # a full batch: there may be more due
        except Exception:  # the loop must outlive a failing database; it retries next tick
            log.exception("webhook delivery sweep failed")


Background = Callable[[threading.Event], None]


def create_app(
    services: Services,
    *,
    revalidate_every_seconds: int = 30,
    webhook_every_seconds: float = 1.0,
    background: Sequence[Background] = (),
    max_request_bytes: int = 8 * 1024 * 1024,
    access_log: logs.AccessLog | None = None,
) -> FastAPI:
    """The app; `background` tasks (the embedded worker) run in threads while it serves
    and are asked to stop, through the event they are given, when it shuts down.
    `access_log`: openft's writer of the access lines, where uvicorn does not write them."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        tasks = [
            lambda stop: _maintenance_loop(services, revalidate_every_seconds, stop),
            lambda stop: _webhook_loop(services, webhook_every_seconds, stop),
            *background,
        ]
        threads = [
            threading.Thread(target=task, args=(stop,), name=f"openft-background-{n}", daemon=True)
            for n, task in enumerate(tasks)
        ]
        for thread in threads:
            thread.start()
        try:
            yield
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=15)
            await services.live.aclose()
            await services.inference.aclose()
            await services.db.aclose()
            if access_log is not None:
                # Now, not at exit: uvicorn ends a SIGTERM's shutdown by raising the
                # signal again, and the process then dies without running atexit.
                access_log.flush()

    app = FastAPI(
        title="openft",
        version=openft.__version__,
        description="A self-hosted, OpenAI-compatible fine-tuning service.",
        lifespan=lifespan,
    )
    app.state.services = services
    install_error_handlers(app)
    # Innermost: the events page and workers' reports are answered here, past the checks
    # and counts below (api/prerouted.py).
    app.add_middleware(EventsPage, services=services)
    app.add_middleware(WorkerReports, services=services)
    app.add_middleware(RefuseNul)
    app.add_middleware(BodyLimit, max_bytes=max_request_bytes)
    app.add_middleware(RequestIdMiddleware)  # added last: outermost, so every answer has one
    # Around even that: every answer is counted and timed, refusals before a route included.
    install_metrics(app, services, access_log)
    for module in (health, files, jobs, permissions, models, chat, webhooks, worker, graders):
        app.include_router(module.router)
    app.include_router(series_router)  # openft's own: a job's metrics as columns
    mount_console(app)
    return app
