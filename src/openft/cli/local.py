"""Start `openft serve` as a subprocess on a free loopback port: what `openft demo`,
the benchmarks and the tests do to run the real server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


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
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
