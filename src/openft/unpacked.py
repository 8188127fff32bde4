"""A bounded local cache of unpacked archives: what an inference engine reads adapters
from. The archives themselves live in the blob store (perhaps a bucket shared by every
replica); an entry here is only ever a copy, unpacked on first use, dropped when the
cache grows past its bound (least recently used first) and unpacked again when asked.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from openft import archives

log = logging.getLogger(__name__)


def _size(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())


class UnpackedCache:
    """Directories by key (`models/ftjob-…/adapter`, `checkpoints/ftjob-…/ftckpt_…`) under
    `root`, at most `max_bytes` in all (an entry larger than that is still kept alone)."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)
        # What is on disk from an earlier run counts, its last use taken from its mtime.
        self._entries: dict[str, tuple[int, float]] = {}
        for marker in root.rglob(".complete"):
            entry = marker.parent
            key = entry.relative_to(root).as_posix()
            self._entries[key] = (_size(entry), marker.stat().st_mtime)
        for partial in root.rglob(".unpack-*"):
            shutil.rmtree(partial, ignore_errors=True)

    def directory(self, key: str, archive: Callable[[], Iterable[bytes]]) -> Path:
        """The unpacked directory of `key`, unpacked from the tar.gz `archive()` streams
        if it is not here. Raises what `archive` raises (nothing is kept then) and
        `archives.UnsafeArchive` for an archive that would write outside its directory."""
        target = self.root / key
        with self._lock:
            if self._touched(key):
                return target
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".unpack-"))
            try:
                packed = staging / "archive.tar.gz"
                with open(packed, "wb") as out:
                    for chunk in archive():
                        out.write(chunk)
                unpacked = staging / "unpacked"
                archives.unpack(packed, unpacked)
                (unpacked / ".complete").touch()
                if target.exists():
                    shutil.rmtree(target)
                os.replace(unpacked, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            self._entries[key] = (_size(target), time.time())
            self._evict(keep=key)
            return target

    def ready(self, key: str) -> Path | None:
        """The unpacked directory of `key` if it is here now, else None; never unpacks and
        never waits (None too while another thread holds the cache, unpacking): for the
        event loop, which must not block."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self.root / key if self._touched(key) else None
        finally:
            self._lock.release()

    def _touched(self, key: str) -> bool:
        """Whether `key` is here; if so it is marked used now (under the lock)."""
        if key not in self._entries:
            return False
        size, _used = self._entries[key]
        self._entries[key] = (size, time.time())
        return True

    def discard(self, prefix: str) -> None:
        """Drop every entry whose key is `prefix` or lies under it."""
        with self._lock:
            for key in [k for k in self._entries if k == prefix or k.startswith(prefix + "/")]:
                self._drop(key)
            shutil.rmtree(self.root / prefix, ignore_errors=True)

    def total_bytes(self) -> int:
        with self._lock:
            return sum(size for size, _used in self._entries.values())

    def _evict(self, keep: str) -> None:
        total = sum(size for size, _used in self._entries.values())
        for key, (size, _used) in sorted(self._entries.items(), key=lambda item: item[1][1]):
            if total <= self.max_bytes:
                return
            if key != keep:
                log.info(
                    "cache: dropping %s (%d bytes) to stay under %d", key, size, self.max_bytes
                )
                self._drop(key)
                total -= size

    def _drop(self, key: str) -> None:
        self._entries.pop(key, None)
        shutil.rmtree(self.root / key, ignore_errors=True)
