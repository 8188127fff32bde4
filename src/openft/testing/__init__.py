"""Test support, part of the package so that tests, benchmarks and `openft demo` share it:
a real server process on loopback (`server`), throwaway PostgreSQL databases
(`databases`), sample training files (`data`), and the services of one process over an
in-memory SQLite database, to test service logic without a server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from openft.domain.entities import BaseModel, Principal
from openft.services.clock import Clock, system_clock
from openft.services.container import Services
from openft.services.jobs import NewJob
from openft.settings import Settings
from openft.testing.data import chat_file
from openft.wiring import build_services

MEMORY_DATABASE = "sqlite://"


def in_memory_services(
    data_dir: Path, base_models: list[BaseModel], clock: Clock = system_clock, **settings: Any
) -> Services:
    """Every service over a fresh in-memory SQLite database (blobs under `data_dir`),
    on `clock`'s time, with any other `Settings` given."""
    configured = Settings(data_dir=data_dir, database_url=MEMORY_DATABASE, **settings)
    return build_services(configured, base_models, clock)


def queued_job(services: Services, principal: Principal, model: str = "tiny") -> str:
    """A job of `principal`'s on a valid 12-example chat file, validated: queued."""
    train = services.files.upload(principal, "train.jsonl", "fine-tune", [chat_file(12)]).id
    job = services.jobs.create(principal, NewJob(model=model, training_file=train))
    services.jobs.validate(job.id)
    return job.id
