"""The services of one process, over one database. Built by `openft.cli.wiring`."""

from __future__ import annotations

from dataclasses import dataclass

from openft.services.checkpoints import CheckpointService
from openft.services.events import EventService
from openft.services.files import FileService
from openft.services.jobs import JobService
from openft.services.keys import KeyService
from openft.services.models import ModelService
from openft.services.worker import WorkerService
from openft.store.database import Database


@dataclass
class Services:
    db: Database
    keys: KeyService
    files: FileService
    jobs: JobService
    events: EventService
    models: ModelService
    checkpoints: CheckpointService
    worker: WorkerService

    def close(self) -> None:
        self.db.dispose()
