"""Key lifecycle through the CLI and the SDK: list, use, revoke; the embedded worker's
key survives restarts."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from openai import OpenAI

from openft.testing.server import openft_command, running_server, wait_until

FAST_KEY_CACHE = {"OPENFT_KEY_CACHE_SECONDS": "1"}
EMBEDDED = "openft-embedded-worker"


def listed(location: list[str], *flags: str) -> list[list[str]]:
    lines = openft_command("keys", "list", *flags, *location).splitlines()
    return [line.split("\t") for line in lines]


def refused(client: OpenAI) -> bool:
    try:
        client.models.list()
    except openai.AuthenticationError:
        return True
    return False


def test_a_key_is_listed_used_and_revoked(database_url: str, tmp_path: Path) -> None:
    with running_server(database_url, tmp_path, env=FAST_KEY_CACHE) as server:
        location = server.location()
        key = server.new_key("globex")
        (row,) = [row for row in listed(location) if row[1] == "globex"]
        key_id, _project, scope, created, last_used = row
        assert key_id.startswith("key_") and scope == "project"
        assert created.startswith("created=20") and last_used == "last_used=never"
        assert key not in "\n".join("\t".join(r) for r in listed(location))

        client = OpenAI(base_url=server.base_url, api_key=key, max_retries=0)
        assert client.models.list().data == []
        (row,) = [row for row in listed(location) if row[0] == key_id]
        assert row[4].startswith("last_used=20")

        openft_command("keys", "revoke", key_id, *location)
        wait_until(lambda: refused(client), 5, 0.2, "the revoked key to be refused")
        assert key_id not in [row[0] for row in listed(location)]
        (row,) = [row for row in listed(location, "--revoked") if row[0] == key_id]
        assert row[5].startswith("revoked=20")
        with pytest.raises(RuntimeError, match=f"No API key {key_id}"):
            openft_command("keys", "revoke", key_id, *location)


def test_the_embedded_worker_reuses_its_key_across_restarts(
    database_url: str, tmp_path: Path
) -> None:
    location = ["--data-dir", str(tmp_path), "--database-url", database_url]
    for _restart in range(3):
        with running_server(database_url, tmp_path, worker=True):
            pass
    workers = [row for row in listed(location) if row[1] == EMBEDDED]
    assert len(workers) == 1 and workers[0][2] == "worker"
    assert (tmp_path / "embedded-worker.key").stat().st_mode & 0o077 == 0
    # A revoked key is replaced at the next start, not reused.
    openft_command("keys", "revoke", workers[0][0], *location)
    with running_server(database_url, tmp_path, worker=True):
        pass
    (replacement,) = [row for row in listed(location) if row[1] == EMBEDDED]
    assert replacement[0] != workers[0][0]
