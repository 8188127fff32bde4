"""Training artifacts on disk: checkpoint archives and final LoRA adapters.

    <data dir>/checkpoints/<job id>/<checkpoint id>.tar.gz   what a worker resumes from
    <data dir>/models/<job id>/adapter/                      the fine-tuned adapter (peft)

Each is written under a temporary name and renamed into place, so a reader never sees
half of one.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path


class Artifacts:
    def __init__(self, data_dir: Path) -> None:
        self._checkpoints = data_dir / "checkpoints"
        self._models = data_dir / "models"

    def checkpoint_archive(self, job_id: str, checkpoint_id: str) -> Path:
        return self._checkpoints / job_id / f"{checkpoint_id}.tar.gz"

    def adapter_dir(self, job_id: str) -> Path:
        return self._models / job_id / "adapter"

    @staticmethod
    def _write(target: Path, chunks: Iterable[bytes]) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".partial-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def save_checkpoint(self, job_id: str, checkpoint_id: str, chunks: Iterable[bytes]) -> Path:
        target = self.checkpoint_archive(job_id, checkpoint_id)
        self._write(target, chunks)
        return target

    def save_adapter(self, job_id: str, chunks: Iterable[bytes]) -> Path:
        """Unpack a tar.gz of the adapter directory into place (replacing an older one)."""
        target = self.adapter_dir(job_id)
        archive = target.parent / "adapter.tar.gz"
        self._write(archive, chunks)
        unpacked = Path(tempfile.mkdtemp(dir=target.parent, prefix=".unpack-"))
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(unpacked, filter="data")
            if target.exists():
                shutil.rmtree(target)
            os.replace(unpacked, target)
        finally:
            shutil.rmtree(unpacked, ignore_errors=True)
            archive.unlink(missing_ok=True)
        return target
