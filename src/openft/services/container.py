"""The services of one process, over one database. Built by `openft.wiring`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from openft.domain.errors import OpenFTError
from openft.services.checkpoints import CheckpointService
from openft.services.events import EventService
from openft.services.files import FileService
from openft.services.graders import GraderService
from openft.services.inference import InferenceService
from openft.services.jobs import JobService
from openft.services.keys import KeyService
from openft.services.live import LiveEvents
from openft.services.metrics import MetricsService
from openft.services.models import ModelService
from openft.services.permissions import PermissionService
from openft.services.webhooks import WebhookService
from openft.services.worker import WorkerService
from openft.store.interface import BlobStore, Store

# A key no blob ever has: asking for its size touches the store without changing it.
READINESS_PROBE = "readyz/probe"


@dataclass
class Services:
    db: Store
    keys: KeyService
    files: FileService
    jobs: JobService
    events: EventService
    live: LiveEvents
    models: ModelService
    inference: InferenceService
    checkpoints: CheckpointService
    permissions: PermissionService
    worker: WorkerService
    webhooks: WebhookService
    blobs: BlobStore
    metrics: MetricsService

    @cached_property
    def graders(self) -> GraderService:
        # Its sandbox reads the OPENFT_GRADER_* variables itself (the trainer's process
        # grades with the same settings, without a Settings object).
        return GraderService(self.inference, self.models)

    def readiness(self) -> dict[str, str]:
        """Whether this process can serve: "ok", or why not, for the database and the
        blob store (each asked once, now)."""
        return {
            "database": _check(self._ping_database),
            "blob_store": _check(lambda: self.blobs.size(READINESS_PROBE)),
        }

    def _ping_database(self) -> None:
        with self.db.read() as tx:
            tx.ping()

    def close(self) -> None:
        self.webhooks.close()
        self.db.dispose()


def _check(probe: Callable[[], object]) -> str:
    try:
        probe()
    except Exception as exc:  # any failure means not ready: say which, in one line
        reason = exc.message if isinstance(exc, OpenFTError) else f"{type(exc).__name__}: {exc}"
        return reason.split("\n", 1)[0]
    return "ok"
