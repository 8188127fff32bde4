"""The composition root: the one place where concrete stores, services and workers are
built from settings (for the CLI, the tests and the benchmarks alike)."""

from __future__ import annotations

from openft.domain.chat import Caps
from openft.domain.entities import BaseModel
from openft.domain.webhook_addresses import AllowedHosts
from openft.services.artifacts import Artifacts
from openft.services.checkpoints import CheckpointService
from openft.services.clock import Clock, system_clock
from openft.services.container import Services
from openft.services.events import EventService
from openft.services.files import FileService
from openft.services.inference import InferenceService
from openft.services.jobs import JobService
from openft.services.keys import KeyService
from openft.services.live import LiveEvents
from openft.services.metrics import MetricsService
from openft.services.models import ModelService
from openft.services.permissions import PermissionService
from openft.services.webhooks import WebhookService
from openft.services.worker import WorkerService
from openft.serving.interface import Engine, NoEngine
from openft.serving.local import LocalEngine
from openft.serving.vllm import VllmEngine
from openft.settings import MiB, Settings
from openft.store.blob_stores import open_blobs
from openft.store.database import Database, make_engine, sqlite_url
from openft.store.migrate import ensure_schema
from openft.unpacked import UnpackedCache
from openft.worker.launcher import launcher_for
from openft.worker.runner import RunnerSettings


def database_url(settings: Settings) -> str:
    """The database the settings name: SQLite in the data directory unless told otherwise."""
    return settings.database_url or sqlite_url(settings.data_dir)


def runner_settings(settings: Settings) -> RunnerSettings:
    return RunnerSettings(
        work_dir=settings.work_dir or settings.data_dir / "work",
        heartbeat_seconds=settings.heartbeat_seconds,
        metrics_every=settings.metrics_every,
        checkpoint_every=settings.checkpoint_every,
        launcher=launcher_for(settings.nproc_per_node),
        distributed=settings.distributed,
    )


def inference_engine(settings: Settings) -> Engine:
    if settings.serve_engine == "none":
        return NoEngine("it was started with OPENFT_SERVE_ENGINE=none.")
    if settings.serve_engine == "vllm":
        if not settings.vllm_url:
            raise ValueError("OPENFT_SERVE_ENGINE=vllm needs OPENFT_VLLM_URL (the vLLM server)")
        return VllmEngine(settings.vllm_url)
    return LocalEngine(settings.serve_memory_mb * MiB)


def build_services(
    settings: Settings, base_models: list[BaseModel] | None = None, clock: Clock = system_clock
) -> Services:
    """Connect to the database (creating an empty one's schema) and build every service
    (on `clock`'s time: tests move it).

    Raises `SchemaMismatch` when the database holds a schema other than ours.
    """
    engine = make_engine(database_url(settings))
    ensure_schema(engine)
    db = Database(engine)
    blobs = open_blobs(settings.blob_url, settings.data_dir)
    files = FileService(db, blobs, settings.max_upload_bytes, clock)
    if base_models is None:
        base_models = settings.base_models()
    artifacts = Artifacts(
        blobs, UnpackedCache(settings.data_dir / "cache", settings.cache_mb * MiB)
    )
    models = ModelService(db, base_models, clock(), artifacts, clock)
    live = LiveEvents(
        db,
        poll_seconds=settings.stream_poll_seconds,
        keepalive_seconds=settings.stream_keepalive_seconds,
    )
    inference = InferenceService(
        models,
        inference_engine(settings),
        Caps(max_n=settings.chat_max_n, max_tokens=settings.chat_max_tokens),
    )
    return Services(
        db=db,
        blobs=blobs,
        keys=KeyService(db, clock, settings.key_cache_seconds),
        files=files,
        jobs=JobService(db, files, models, min_examples=settings.min_examples, clock=clock),
        events=EventService(db, clock),
        live=live,
        models=models,
        inference=inference,
        checkpoints=CheckpointService(db),
        permissions=PermissionService(db, clock),
        worker=WorkerService(
            db,
            files,
            models,
            artifacts,
            heartbeat_timeout=settings.heartbeat_timeout_seconds,
            max_attempts=settings.max_attempts,
            keep_checkpoints=settings.keep_checkpoints,
            clock=clock,
        ),
        webhooks=WebhookService(
            db,
            retry_base_seconds=settings.webhook_retry_seconds,
            allowed_hosts=AllowedHosts.parse(settings.webhook_allowed_hosts),
            try_seconds=settings.webhook_try_seconds,
            concurrency=settings.webhook_concurrency,
            clock=clock,
        ),
        metrics=MetricsService(
            db, live, inference, heartbeat_timeout=settings.heartbeat_timeout_seconds, clock=clock
        ),
    )
