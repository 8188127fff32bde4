"""Training artifacts: checkpoint archives and fine-tuned LoRA adapters.

In the blob store (shared by every replica and worker):
    checkpoints/<job id>/<checkpoint id>.tar.gz   a checkpoint: what a worker resumes from
    models/<job id>/adapter.tar.gz                the fine-tuned adapter (peft's files)

In this process's local cache (a copy, unpacked on first use, for inference engines):
    models/<job id>/adapter/                      the adapter, unpacked
    checkpoints/<job id>/<checkpoint id>/         a checkpoint, unpacked
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from openft.domain.entities import Blob
from openft.store.interface import BlobStore
from openft.unpacked import UnpackedCache


def checkpoint_key(job_id: str, checkpoint_id: str) -> str:
    return f"checkpoints/{job_id}/{checkpoint_id}.tar.gz"


def adapter_key(job_id: str) -> str:
    return f"models/{job_id}/adapter.tar.gz"


def _entry(job_id: str, checkpoint_id: str | None) -> str:
    """Where an adapter (or a checkpoint) is unpacked in the cache."""
    if checkpoint_id is None:
        return f"models/{job_id}/adapter"
    return f"checkpoints/{job_id}/{checkpoint_id}"


class Artifacts:
    def __init__(self, blobs: BlobStore, cache: UnpackedCache) -> None:
        self._blobs = blobs
        self._cache = cache

    def save_checkpoint(self, job_id: str, checkpoint_id: str, chunks: Iterable[bytes]) -> None:
        self._blobs.put(checkpoint_key(job_id, checkpoint_id), chunks)

    def delete_checkpoint(self, job_id: str, checkpoint_id: str) -> None:
        self._blobs.delete(checkpoint_key(job_id, checkpoint_id))
        self._cache.discard(f"checkpoints/{job_id}/{checkpoint_id}")

    def checkpoint_archive(self, job_id: str, checkpoint_id: str) -> Blob:
        return self._blobs.get(checkpoint_key(job_id, checkpoint_id))

    def save_adapter(self, job_id: str, archive: Iterable[bytes]) -> None:
        """Store the tar.gz of the adapter directory (replacing an older one)."""
        self._blobs.put(adapter_key(job_id), archive)
        self._cache.discard(f"models/{job_id}")

    def adapter_archive(self, job_id: str) -> Blob:
        return self._blobs.get(adapter_key(job_id))

    def adapter_dir(self, job_id: str, checkpoint_id: str | None) -> str:
        """The directory of the job's fine-tuned adapter, or of one of its checkpoints (its
        adapter among the trainer's state), for an inference engine: unpacked if need be."""
        key = (
            adapter_key(job_id) if checkpoint_id is None else checkpoint_key(job_id, checkpoint_id)
        )
        return str(self._cache.directory(_entry(job_id, checkpoint_id), self._chunks(key)))

    def unpacked_dir(self, job_id: str, checkpoint_id: str | None) -> str | None:
        """The adapter's (or the checkpoint's) directory if it is unpacked here already,
        else None: it neither unpacks nor waits."""
        ready = self._cache.ready(_entry(job_id, checkpoint_id))
        return None if ready is None else str(ready)

    def delete_adapters(self, job_id: str) -> None:
        """Remove the job's fine-tuned adapter and every unpacked copy of it and of its
        checkpoints here (the checkpoint archives stay: they are the job's history)."""
        self._blobs.delete(adapter_key(job_id))
        self._cache.discard(f"models/{job_id}")
        self._cache.discard(f"checkpoints/{job_id}")

    def _chunks(self, key: str) -> Callable[[], Iterable[bytes]]:
        return lambda: self._blobs.get(key).chunks
