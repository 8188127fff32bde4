"""Schemathesis against a real server: generated requests, from openft's own
/openapi.json and from OpenAI's published spec, find no server error and no response
that breaks the schema (nor, for our own, an undocumented status or a 405 without Allow).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from openft.testing.server import Server, running_server

OPENAI_SPEC = Path(__file__).parents[1] / "contract" / "openai-fine-tuning.yaml"
# Bounded, and seeded so that a failure replays: a CI run takes seconds, not minutes.
BOUNDS = ["--max-examples", "25", "--seed", "20261123", "--no-color", "--request-timeout", "30"]


@pytest.fixture
def fresh_server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    with running_server(database_url, tmp_path, "tiny=/nonexistent/tiny") as server:
        yield server


def schemathesis(schema: str, server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "st"), "run", schema, *BOUNDS, *args]
    command += ["-H", f"Authorization: Bearer {server.key}"]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_our_own_schema_holds(fresh_server: Server) -> None:
    done = schemathesis(
        f"{fresh_server.root_url}/openapi.json",
        fresh_server,
        "--exclude-path-regex",
        "^/v1/worker",  # worker keys only: its own tests cover it
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance,response_headers_conformance,unsupported_method",
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def test_openai_schemas_hold(fresh_server: Server) -> None:
    done = schemathesis(
        str(OPENAI_SPEC),
        fresh_server,
        "--url",
        fresh_server.base_url,
        "--checks",
        "not_a_server_error,response_schema_conformance",
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
