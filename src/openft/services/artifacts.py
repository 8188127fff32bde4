"""Training artifacts as blobs: checkpoint archives and final LoRA adapters.

checkpoints/<job id>/<checkpoint id>.tar.gz   what a worker resumes from
models/<job id>/adapter/                      the fine-tuned adapter (peft's files)
"""

from __future__ import annotations

from collections.abc import Iterable

from openft.domain.entities import Blob
from openft.store.interface import BlobStore


def checkpoint_key(job_id: str, checkpoint_id: str) -> str:
    return f"checkpoints/{job_id}/{checkpoint_id}.tar.gz"


def adapter_prefix(job_id: str) -> str:
    return f"models/{job_id}/adapter"


class Artifacts:
    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs

    def save_checkpoint(self, job_id: str, checkpoint_id: str, chunks: Iterable[bytes]) -> None:
        self._blobs.put(checkpoint_key(job_id, checkpoint_id), chunks)

    def delete_checkpoint(self, job_id: str, checkpoint_id: str) -> None:
        self._blobs.delete(checkpoint_key(job_id, checkpoint_id))

    def checkpoint_archive(self, job_id: str, checkpoint_id: str) -> Blob:
        return self._blobs.get(checkpoint_key(job_id, checkpoint_id))

    def save_adapter(self, job_id: str, archive: Iterable[bytes]) -> None:
        """Unpack a tar.gz of the adapter directory into place (replacing an older one)."""
        self._blobs.unpack(adapter_prefix(job_id), archive)
