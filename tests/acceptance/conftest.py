"""A real `openft serve` process per backend, shared by the acceptance tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import AsyncOpenAI, OpenAI

from openft.services.container import Services
from openft.settings import Settings
from openft.testing.server import Server, running_server
from openft.wiring import build_services
from tests.conftest import BACKENDS, _fresh_database


@pytest.fixture(scope="session", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp(f"server-{request.param}")
    for url in _fresh_database(request.param, data_dir, request):
        with running_server(url, data_dir, "tiny=/nonexistent/tiny-model") as running:
            yield running


@pytest.fixture
def client(server: Server) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)


@pytest.fixture
def async_client(server: Server) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)


@pytest.fixture(scope="session")
def backdoor(server: Server) -> Iterator[Services]:
    """The service layer over the server's own database: how tests append events the way
    a worker will, without going through HTTP."""
    services = build_services(
        Settings(data_dir=server.data_dir, database_url=server.database_url), []
    )
    yield services
    services.close()


@pytest.fixture(scope="session")
def files_dir(server: Server) -> Path:
    return server.data_dir / "files"
