"""Blobs as files under one local directory: the blob `files/file-X` is the file
`<root>/files/file-X`. Each is written under a temporary name and renamed into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from openft import archives
from openft.domain.entities import Blob
from openft.store.interface import BlobStore

CHUNK = 1 << 20


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(CHUNK):
            yield chunk


class LocalBlobs(BlobStore):
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """Where the blob lives on disk (keys are made by openft, never by clients)."""
        return self.root / key

    def put(self, key: str, chunks: Iterable[bytes]) -> None:
        target = self.path(key)
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

    def get(self, key: str) -> Blob:
        handle = open(self.path(key), "rb")
        return Blob(os.fstat(handle.fileno()).st_size, _chunks(handle))

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_tree(self, prefix: str) -> None:
        shutil.rmtree(self.path(prefix), ignore_errors=True)

    def unpack(self, prefix: str, archive: Iterable[bytes]) -> None:
        target = self.path(prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        packed = f"{prefix}.partial.tar.gz"
        self.put(packed, archive)
        unpacked = Path(tempfile.mkdtemp(dir=target.parent, prefix=".unpack-"))
        try:
            archives.unpack(self.path(packed), unpacked)
            if target.exists():
                shutil.rmtree(target)
            os.replace(unpacked, target)
        finally:
            shutil.rmtree(unpacked, ignore_errors=True)
            self.delete(packed)
