"""Blob throughput through the API: upload and download of one large file over HTTP,
with the blobs in the local data directory and in an S3 bucket (SeaweedFS on loopback),
and the API process's peak memory meanwhile.

Prints, per store: upload MB/s (client to API to store), download MB/s (store to API to
client), and the server's peak RSS before and after (VmHWM): flat means no blob was held
whole in memory. Each store gets its own `openft serve --no-worker` process on SQLite.

Usage: python bench/blob_bench.py [--megabytes 200]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from openft.store.database import sqlite_url
from openft.testing.s3 import seaweed
from openft.testing.server import Server, running_server

CHUNK = 1 << 20


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Pattern:
    """A file-like stream of `total` repeatable bytes, never held whole."""

    def __init__(self, total: int) -> None:
        self.total, self.sent = total, 0
        self.block = os.urandom(CHUNK)

    def read(self, size: int = -1) -> bytes:
        n = min(CHUNK if size < 0 else size, self.total - self.sent, CHUNK)
        self.sent += n
        return self.block[:n]

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(CHUNK):
            yield chunk


def run(server: Server, label: str, megabytes: int) -> None:
    pid = server.process.pid
    http = httpx.Client(headers={"Authorization": f"Bearer {server.key}"}, timeout=600)
    # Warm the process up (imports, first request) so the peak measures the transfer.
    http.post(
        f"{server.base_url}/files",
        data={"purpose": "user_data"},
        files={"file": ("warm.bin", b"x" * 1000)},
    ).raise_for_status()
    before = rss_mb(pid)
    total = megabytes * CHUNK
    source = Pattern(total)
    started = time.perf_counter()
    created = http.post(
        f"{server.base_url}/files",
        data={"purpose": "user_data"},
        files={"file": ("big.bin", source, "application/octet-stream")},  # type: ignore[dict-item]
    )
    created.raise_for_status()
    upload = time.perf_counter() - started
    after_upload = peak_rss_mb(pid)
    file_id = created.json()["id"]
    digest, received = hashlib.sha256(), 0
    started = time.perf_counter()
    with http.stream("GET", f"{server.base_url}/files/{file_id}/content") as response:
        response.raise_for_status()
        for chunk in response.iter_bytes(CHUNK):
            digest.update(chunk)
            received += len(chunk)
    download = time.perf_counter() - started
    assert received == total, (received, total)
    after_download = peak_rss_mb(pid)
    print(
        f"{label:>6}: upload {megabytes / upload:7.1f} MB/s, download {megabytes / download:7.1f}"
        f" MB/s; API RSS {before:.0f} MB before, peak {after_upload:.0f} MB after the upload,"
        f" {after_download:.0f} MB after the download ({megabytes} MB file)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="openft-blob-bench-") as scratch:
        root = Path(scratch)
        local_env = {"OPENFT_MAX_UPLOAD_BYTES": str((args.megabytes + 1) * CHUNK)}
        with running_server(sqlite_url(root / "local"), root / "local", env=local_env) as server:
            run(server, "local", args.megabytes)
        with seaweed(root / "seaweedfs", bucket="openft-bench") as s3:
            os.environ.update(s3.env())
            env = {**local_env, "OPENFT_BLOB_URL": s3.url("bench")}
            with running_server(sqlite_url(root / "s3"), root / "s3", env=env) as server:
                run(server, "s3", args.megabytes)


if __name__ == "__main__":
    main()
