"""Training artifacts as blobs: checkpoint archives and final LoRA adapters.

checkpoints/<job id>/<checkpoint id>.tar.gz   what a worker resumes from
models/<job id>/adapter/                      the fine-tuned adapter (peft's files)
serving/<job id>/<checkpoint id>/             a checkpoint unpacked for inference
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from openft.domain.entities import Blob
from openft.store.interface import BlobStore


def checkpoint_key(job_id: str, checkpoint_id: str) -> str:
    return f"checkpoints/{job_id}/{checkpoint_id}.tar.gz"


def adapter_prefix(job_id: str) -> str:
    return f"models/{job_id}/adapter"


def unpacked_checkpoints_prefix(job_id: str) -> str:
    return f"serving/{job_id}"


def unpacked_checkpoint_prefix(job_id: str, checkpoint_id: str) -> str:
    return f"{unpacked_checkpoints_prefix(job_id)}/{checkpoint_id}"


class Artifacts:
    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs
        self._unpacking = threading.Lock()

    def save_checkpoint(self, job_id: str, checkpoint_id: str, chunks: Iterable[bytes]) -> None:
        self._blobs.put(checkpoint_key(job_id, checkpoint_id), chunks)

    def delete_checkpoint(self, job_id: str, checkpoint_id: str) -> None:
        self._blobs.delete(checkpoint_key(job_id, checkpoint_id))
        self._blobs.delete_tree(unpacked_checkpoint_prefix(job_id, checkpoint_id))

    def checkpoint_archive(self, job_id: str, checkpoint_id: str) -> Blob:
        return self._blobs.get(checkpoint_key(job_id, checkpoint_id))

    def save_adapter(self, job_id: str, archive: Iterable[bytes]) -> None:
        """Unpack a tar.gz of the adapter directory into place (replacing an older one)."""
        self._blobs.unpack(adapter_prefix(job_id), archive)

    def adapter_dir(self, job_id: str) -> str:
        """The directory of the job's fine-tuned adapter, for an inference engine."""
        return str(self._blobs.path(adapter_prefix(job_id)))

    def checkpoint_adapter_dir(self, job_id: str, checkpoint_id: str) -> str:
        """A checkpoint's directory (its adapter among the trainer's state), unpacked from
        its archive the first time it is asked for."""
        prefix = unpacked_checkpoint_prefix(job_id, checkpoint_id)
        with self._unpacking:
            if not self._blobs.path(prefix).is_dir():
                self._blobs.unpack(prefix, self.checkpoint_archive(job_id, checkpoint_id).chunks)
        return str(self._blobs.path(prefix))

    def delete_adapters(self, job_id: str) -> None:
        """Remove the job's fine-tuned adapter and its checkpoints' unpacked copies (the
        checkpoint archives stay: they are the job's history)."""
        self._blobs.delete_tree(adapter_prefix(job_id))
        self._blobs.delete_tree(unpacked_checkpoints_prefix(job_id))
