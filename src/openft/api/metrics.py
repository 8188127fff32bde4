"""Prometheus metrics: `GET /metrics` for admin keys, and the same text without a key on
an address of the operator's choosing (`OPENFT_METRICS_ADDRESS`) for a scraper.

Each app has a registry of its own (never prometheus-client's global one), so that tests
running several apps in one process count apart. Three sources feed it:

- HTTP requests, counted by the middleware below as they end, labelled by the route's
  template (`/v1/fine_tuning/jobs/{fine_tuning_job_id}`), never the raw path, so that ids
  cannot multiply the series;
- counts across the deployment (jobs by status, the queue, worker leases, webhook
  deliveries), read from the database at each scrape: every replica reports the same;
- this process's counters (events appended, live followers, chat tokens, adapters).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openft import logs
from openft.api.auth import AdminPrincipal
from openft.domain.entities import JobStatus
from openft.services.container import Services
from openft.services.metrics import MetricsService

log = logging.getLogger(__name__)

UNMATCHED = "unmatched"  # the route label of a request no route matched (a 404, say)
# Seconds: from a cached job read (about a millisecond) to an upload or a chat completion.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class HttpMetrics:
    """The request counter and latency histogram of one app."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "openft_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "openft_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response (a stream's whole life).",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )


class MetricsMiddleware:
    """Count and time every HTTP request by the template of the route that served it, and
    write its access line when openft writes them (`logs.AccessLog`): as uvicorn does,
    when its response starts (a stream's too), or when it ends without one (a 500)."""

    def __init__(
        self, app: ASGIApp, metrics: HttpMetrics, access_log: logs.AccessLog | None = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0  # until a response starts
        access_log = self.access_log

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if access_log is not None:
                    access_log.write(scope, status)
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            if not status:  # an exception escaped every handler: uvicorn answers 500
                status = 500
                if access_log is not None:
                    access_log.write(scope, status)
            # The router writes the route it matched into this same scope.
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)


class ServiceCollector(Collector):
    """Reads the services at each scrape: the database's counts and the process's own."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def collect(self) -> Iterator[Metric]:
        metrics = self._services.metrics
        yield from self._deployment(metrics)
        counts = metrics.in_process()
        yield _counter(
            "openft_events_appended",
            "Job events this process appended (committed) since it started.",
            counts.events_appended,
        )
        yield _gauge(
            "openft_live_followers",
            "Streams following a job's events on this process now.",
            counts.live_followers,
        )
        yield _counter(
            "openft_chat_completion_tokens",
            "Completion tokens this process's chat engine generated since it started.",
            counts.chat_tokens_generated,
        )
        yield _gauge(
            "openft_adapters_loaded",
            "LoRA adapters held by this process's local chat engine now.",
            counts.adapters_loaded,
        )
        yield _counter(
            "openft_adapter_loads",
            "LoRA adapters this process's local chat engine loaded since it started.",
            counts.adapter_loads,
        )

    def _deployment(self, metrics: MetricsService) -> Iterator[Metric]:
        try:
            snapshot = metrics.snapshot()
        except Exception:  # a scrape still tells the rest, and that the database is away
            log.warning("metrics could not read the database", exc_info=True)
            yield _gauge("openft_database_up", "Whether this scrape read the database.", 0)
            return
        yield _gauge("openft_database_up", "Whether this scrape read the database.", 1)
        jobs = GaugeMetricFamily(
            "openft_jobs", "Fine-tuning jobs in every project, by status.", labels=["status"]
        )
        for status in JobStatus:  # every status, 0 where none: a series never vanishes
            jobs.add_metric([status.value], snapshot.jobs_by_status.get(status.value, 0))
        yield jobs
        yield _gauge(
            "openft_jobs_queued",
            "Jobs waiting for a worker.",
            snapshot.jobs_by_status.get(JobStatus.QUEUED.value, 0),
        )
        oldest = snapshot.oldest_queued_at
        yield _gauge(
            "openft_queued_job_oldest_age_seconds",
            "How long the longest-waiting queued job has waited (0 when none waits).",
            0 if oldest is None else max(0, metrics.now() - oldest),
        )
        yield _gauge(
            "openft_worker_leases_held",
            "Running jobs held by a worker.",
            snapshot.leases_held,
        )
        yield _gauge(
            "openft_worker_leases_expired",
            "Running jobs whose worker has been silent past the heartbeat timeout.",
            snapshot.leases_expired,
        )
        yield _gauge(
            "openft_webhook_deliveries_pending",
            "Webhook deliveries not yet made (first tries and retries).",
            snapshot.webhooks_pending,
        )
        yield _gauge(
            "openft_webhook_deliveries_failed",
            "Webhook deliveries given up on after their last try.",
            snapshot.webhooks_failed,
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def install_metrics(
    app: FastAPI, services: Services, access_log: logs.AccessLog | None = None
) -> CollectorRegistry:
    """Give `app` its registry, its request middleware (which writes the access lines
    when openft does) and its `/metrics` route."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(services))
    app.add_middleware(MetricsMiddleware, metrics=HttpMetrics(registry), access_log=access_log)
    app.state.metrics_registry = registry
    app.include_router(router)
    return registry


router = APIRouter(tags=["metrics"])


# Not in the OpenAPI document: an operator's endpoint, not part of OpenAI's API.
@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, _admin: AdminPrincipal) -> Response:
    registry: CollectorRegistry = request.app.state.metrics_registry
    body = await run_in_threadpool(generate_latest, registry)  # it reads the database
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def serve_metrics(registry: CollectorRegistry, address: str) -> None:
    """Serve `registry` without a key on `address` (host:port) from a daemon thread, for
    a scraper the operator points there (and keeps from the public)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"OPENFT_METRICS_ADDRESS must be host:port, not {address!r}")
    start_http_server(int(port), addr=host.strip("[]"), registry=registry)
    log.info("serving metrics on http://%s/metrics", address)
