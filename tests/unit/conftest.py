"""Unit tests run the services on in-memory SQLite, on a clock they move."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from openft.domain.entities import BaseModel
from openft.services.container import Services
from openft.testing import in_memory_services


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def services(tmp_path: Path, clock: Clock) -> Iterator[Services]:
    """Every service (`principal`, from tests/conftest.py, is a key on them)."""
    built = in_memory_services(
        tmp_path,
        [BaseModel("tiny", "/nowhere")],
        clock,
        heartbeat_timeout_seconds=60,
        webhook_allowed_hosts="127.0.0.1/32",  # the tests' receivers are on loopback
    )
    yield built
    built.close()
