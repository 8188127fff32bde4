"""Start `openft serve` as a subprocess on a free loopback port: what `openft demo`,
the benchmarks and the tests do to run the real server, and stop it when done."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import httpx

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def openft_command(*args: str, env: dict[str, str] | None = None) -> str:
    """Run the `openft` CLI in a subprocess; its stdout, or RuntimeError with its stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "openft.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"openft {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout.strip()


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a server process: SIGTERM, and SIGKILL if it has not ended within 30 s."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def local_server(
    data_dir: Path,
    *serve_args: str,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run `openft serve --data-dir DATA_DIR SERVE_ARGS…` until the block ends; yield its
    root URL (no /v1) once /healthz answers, and the process. Its log: DATA_DIR/server.log."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "server.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "openft.cli.main",
                "serve",
                "--port",
                str(port),
                "--no-access-log",
                "--data-dir",
                str(data_dir),
                *serve_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            # Its own process group, with the trainers its worker starts: all stopped below.
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"openft serve did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield url, process
    finally:
        stop(process)
        with contextlib.suppress(ProcessLookupError):  # nothing of the group was left
            os.killpg(process.pid, signal.SIGKILL)


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


def wait_until(
    predicate: Callable[[], T | Literal[False] | None],
    timeout: float,
    interval: float = 0.2,
    what: str = "condition",
) -> T:
    """Poll `predicate` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
