"""Helpers shared by the test suites: databases, sample files, a real server process."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, make_url, text

from openft.cli.local import local_server, openft_command

POSTGRES_ENV = "OPENFT_TEST_POSTGRES_URL"


def postgres_admin_url() -> str | None:
    """The PostgreSQL server tests may use (None: skip those tests)."""
    return os.environ.get(POSTGRES_ENV) or None


def _admin_engine(url: str):  # type: ignore[no-untyped-def]
    return create_engine(
        make_url(url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )


def create_postgres_database(admin_url: str, template: str | None = None) -> str:
    """Create a fresh database on the server of `admin_url` and return its URL."""
    name = f"openft_test_{secrets.token_hex(6)}"
    engine = _admin_engine(admin_url)
    with engine.connect() as conn:
        clause = f" TEMPLATE {template}" if template else ""
        conn.execute(text(f'CREATE DATABASE "{name}"{clause}'))
    engine.dispose()
    return (
        make_url(admin_url)
        .set(drivername="postgresql+psycopg", database=name)
        .render_as_string(hide_password=False)
    )


def drop_postgres_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    engine = _admin_engine(admin_url)
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def chat_line(i: int, *, weight: int | None = None) -> str:
    assistant: dict[str, object] = {"role": "assistant", "content": f"answer {i}"}
    if weight is not None:
        assistant["weight"] = weight
    return json.dumps(
        {
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": f"question {i}"},
                assistant,
            ]
        }
    )


def preference_line(i: int) -> str:
    return json.dumps(
        {
            "input": {"messages": [{"role": "user", "content": f"question {i}"}]},
            "preferred_output": [{"role": "assistant", "content": f"good {i}"}],
            "non_preferred_output": [{"role": "assistant", "content": f"bad {i}"}],
        }
    )


def chat_file(n: int = 12) -> bytes:
    return ("\n".join(chat_line(i) for i in range(n)) + "\n").encode()


def preference_file(n: int = 12) -> bytes:
    return ("\n".join(preference_line(i) for i in range(n)) + "\n").encode()


@dataclass
class Server:
    base_url: str
    key: str
    database_url: str
    data_dir: Path
    process: subprocess.Popen[bytes]

    def new_key(self, project: str, scope: str = "project") -> str:
        return openft_command(
            "keys", "create", "--project", project, "--scope", scope, *self.location()
        )

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")

    def location(self) -> list[str]:
        return ["--data-dir", str(self.data_dir), "--database-url", self.database_url]


@contextmanager
def running_server(
    database_url: str,
    data_dir: Path,
    *models: str,
    worker: bool = False,
    env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """Start `openft serve` on a free loopback port (with its embedded worker if
    `worker`) and a key of project "acme"; stop it on exit."""
    location = ["--data-dir", str(data_dir), "--database-url", database_url]
    key = openft_command("keys", "create", "--project", "acme", *location)
    model_flags = [flag for model in models for flag in ("--model", model)]
    with local_server(
        data_dir,
        "--database-url",
        database_url,
        "--worker" if worker else "--no-worker",
        *model_flags,
        env={"OPENFT_REVALIDATE_AFTER_SECONDS": "1", **(env or {})},
    ) as (url, process):
        yield Server(f"{url}/v1", key, database_url, data_dir, process)


def toy_chat_file(n: int = 16) -> bytes:
    """A learnable toy task: four questions, each always with the same answer."""
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"question {i % 4}"},
                    {"role": "assistant", "content": f"answer {i % 4}"},
                ]
            }
        )
        for i in range(n)
    ]
    return ("\n".join(lines) + "\n").encode()


TERMINAL = ("succeeded", "failed", "cancelled")


def wait_until(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll `predicate` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
