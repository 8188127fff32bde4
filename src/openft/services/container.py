"""The services of one process, over one database. Built by `openft.cli.wiring`."""

from __future__ import annotations

from dataclasses import dataclass

from openft.services.checkpoints import CheckpointService
from openft.services.events import EventService
from openft.services.files import FileService
from openft.services.inference import InferenceService
from openft.services.jobs import JobService
from openft.services.keys import KeyService
from openft.services.live import LiveEvents
from openft.services.models import ModelService
from openft.services.webhooks import WebhookService
from openft.services.worker import WorkerService
from openft.store.interface import Store


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
    worker: WorkerService
    webhooks: WebhookService

    def check_health(self) -> None:
        """Raise unless the database answers."""
        with self.db.read() as tx:
            tx.ping()

    def close(self) -> None:
        self.webhooks.close()
        self.db.dispose()
