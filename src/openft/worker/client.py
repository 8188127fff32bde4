"""The worker protocol's client (see api/routes/worker.py and docs/workers.md)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from openft.domain.errors import LeaseLost

T = TypeVar("T")
RETRIES = 5


class WorkerClient:
    def __init__(self, base_url: str, key: str, worker_id: str, *, timeout: float = 120) -> None:
        self.worker_id = worker_id
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + "/v1/worker",
            headers={"Authorization": f"Bearer {key}", "OpenFT-Worker": worker_id},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def _call(self, send: Callable[[], httpx.Response]) -> httpx.Response:
        """Send with retries on network errors and 5xx; raise `LeaseLost` on 409."""
        for attempt in range(RETRIES):
            try:
                response = send()
            except httpx.TransportError:
                if attempt == RETRIES - 1:
                    raise
                time.sleep(min(8.0, 0.5 * 2**attempt))
                continue
            if response.status_code >= 500 and attempt < RETRIES - 1:
                time.sleep(min(8.0, 0.5 * 2**attempt))
                continue
            if response.status_code == 409:
                raise LeaseLost(response.json()["error"]["message"])
            response.raise_for_status()
            return response
        raise AssertionError("unreachable")

    def claim(self) -> dict[str, Any] | None:
        response = self._call(lambda: self._http.post("/claim", json={"worker_id": self.worker_id}))
        return None if response.status_code == 204 else dict(response.json())

    def heartbeat(self, job_id: str, progress: dict[str, int]) -> str | None:
        response = self._call(lambda: self._http.post(f"/jobs/{job_id}/heartbeat", json=progress))
        control: str | None = response.json()["control"]
        return control

    def report(self, job_id: str, batch: int, events: list[dict[str, Any]]) -> None:
        body = {"batch": batch, "events": events}
        self._call(lambda: self._http.post(f"/jobs/{job_id}/events", json=body))

    def _upload(self, path: str, meta: dict[str, Any], archive: Path) -> dict[str, Any]:
        def send() -> httpx.Response:
            with open(archive, "rb") as handle:
                return self._http.post(
                    path,
                    data={"meta": json.dumps(meta)},
                    files={"archive": (archive.name, handle, "application/gzip")},
                )

        return dict(self._call(send).json())

    def add_checkpoint(
        self, job_id: str, step: int, metrics: dict[str, Any], archive: Path
    ) -> dict[str, Any]:
        return self._upload(
            f"/jobs/{job_id}/checkpoints", {"step": step, "metrics": metrics}, archive
        )

    def complete(self, job_id: str, trained_tokens: int, adapter: Path) -> dict[str, Any]:
        return self._upload(f"/jobs/{job_id}/complete", {"trained_tokens": trained_tokens}, adapter)

    def fail(self, job_id: str, code: str, message: str, param: str | None) -> None:
        body = {"code": code, "message": message, "param": param}
        self._call(lambda: self._http.post(f"/jobs/{job_id}/fail", json=body))

    def stopped(self, job_id: str) -> None:
        self._call(lambda: self._http.post(f"/jobs/{job_id}/stopped"))

    def download(self, path: str, destination: Path) -> Path:
        destination.parent.mkdir(parents=True, exist_ok=True)
        with self._http.stream("GET", path) as response:
            if response.status_code == 409:
                raise LeaseLost(response.read().decode())
            response.raise_for_status()
            with open(destination, "wb") as out:
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
        return destination

    def download_file(self, job_id: str, file_id: str, destination: Path) -> Path:
        return self.download(f"/jobs/{job_id}/files/{file_id}", destination)

    def download_checkpoint(self, job_id: str, checkpoint_id: str, destination: Path) -> Path:
        return self.download(f"/jobs/{job_id}/checkpoints/{checkpoint_id}/archive", destination)
