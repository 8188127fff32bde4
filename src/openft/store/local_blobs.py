"""Blobs as files under one local directory: the blob `files/file-X` is the file
`<root>/files/file-X`. Each is written under a temporary name, synced and renamed into
place, so a reader sees a whole blob or none."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, NoReturn

from openft import archives
from openft.domain.entities import Blob
from openft.domain.errors import BlobMissing, BlobUnavailable
from openft.store.interface import BlobStore

log = logging.getLogger(__name__)
CHUNK = 1 << 20
# The top-level folders openft writes blobs under. The data directory holds other things
# too (the SQLite database, the worker's scratch space, caches): they are not blobs.
NAMESPACES = ("files", "checkpoints", "models")
_PARTIAL = ".partial-"
_TRANSIENT = frozenset({errno.EIO, errno.ENOSPC, errno.EDQUOT, errno.ESTALE, errno.ETIMEDOUT})


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(CHUNK):
            yield chunk


class LocalBlobs(BlobStore):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root.resolve())
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / key  # keys are made by openft, never by clients

    def _fail(self, key: str, exc: OSError) -> NoReturn:
        """A disk that may recover (an I/O error, a full disk, a network mount gone stale)
        answers 503; any other error is a fault of this server's set-up, raised as is."""
        if exc.errno in _TRANSIENT:
            raise BlobUnavailable(
                f"The blob store {self.url} failed on {key!r}: {exc.strerror}."
            ) from exc
        raise exc

    def put(self, key: str, chunks: Iterable[bytes]) -> None:
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=_PARTIAL)
        except OSError as exc:
            self._fail(key, exc)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, target)
        except BaseException as exc:
            Path(temporary).unlink(missing_ok=True)
            if isinstance(exc, OSError):
                self._fail(key, exc)
            raise

    def get(self, key: str) -> Blob:
        try:
            handle = open(self._path(key), "rb")
        except FileNotFoundError:
            raise BlobMissing(key, self.url) from None
        except OSError as exc:
            self._fail(key, exc)
        return Blob(os.fstat(handle.fileno()).st_size, _chunks(handle))

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            self._fail(key, exc)

    def size(self, key: str) -> int | None:
        path = self._path(key)
        return path.stat().st_size if path.is_file() else None

    def keys(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        for namespace in NAMESPACES:
            for directory, _dirs, names in os.walk(self.root / namespace):
                for name in sorted(names):
                    path = Path(directory, name)
                    key = path.relative_to(self.root).as_posix()
                    if not name.startswith(_PARTIAL) and key.startswith(prefix):
                        yield key, path.stat().st_size

    def upgrade_layout(self) -> None:
        """Bring a data directory written before blobs could live in a bucket to today's
        layout: each fine-tuned adapter, once kept unpacked (`models/<job>/adapter/`), is
        packed into the blob `models/<job>/adapter.tar.gz`; checkpoints once unpacked
        for serving (`serving/`) go (the local cache unpacks them again on demand)."""
        for unpacked in sorted((self.root / "models").glob("*/adapter")):
            if not unpacked.is_dir():
                continue
            key = f"models/{unpacked.parent.name}/adapter.tar.gz"
            if self.size(key) is None:
                packed = archives.pack(unpacked, unpacked.parent / f"{_PARTIAL}adapter.tar.gz")
                os.replace(packed, self._path(key))
                log.info("packed %s into the blob %s", unpacked, key)
            shutil.rmtree(unpacked)
        shutil.rmtree(self.root / "serving", ignore_errors=True)
