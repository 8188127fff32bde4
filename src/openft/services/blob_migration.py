"""Copy every blob from one store into another (a single node's data directory into the
bucket its replicas will share), verified and resumable.

Each blob is streamed across while its SHA-256 is computed, then read back from the
target and checked against that size and digest. A blob already in the target with the
same size and digest is skipped, so an interrupted migration is simply run again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from openft.store.interface import BlobStore


@dataclass
class MigrationReport:
    copied: int = 0
    skipped: int = 0
    bytes: int = 0


class MigrationError(Exception):
    """A copy that did not read back as it was written."""


def _digest(chunks: Iterable[bytes]) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def _copy(source: BlobStore, target: BlobStore, key: str) -> tuple[int, str]:
    """Stream one blob across; its size and SHA-256 as read from the source."""
    digest, size = hashlib.sha256(), 0

    def hashed(chunks: Iterator[bytes]) -> Iterator[bytes]:
        nonlocal size
        for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
            yield chunk

    target.put(key, hashed(source.get(key).chunks))
    return size, digest.hexdigest()


def migrate(
    source: BlobStore,
    target: BlobStore,
    progress: Callable[[str, bool], None] = lambda key, copied: None,
) -> MigrationReport:
    """Copy `source` into `target`; `progress(key, copied)` after each blob."""
    report = MigrationReport()
    for key, size in source.keys():
        if target.size(key) == size:
            expected = _digest(source.get(key).chunks)
            if _digest(target.get(key).chunks) == expected:
                report.skipped += 1
                report.bytes += size
                progress(key, False)
                continue
        expected = _copy(source, target, key)
        found = _digest(target.get(key).chunks)
        if found != expected:
            raise MigrationError(
                f"{key}: wrote {expected[0]} bytes (sha256 {expected[1]}), "
                f"read back {found[0]} (sha256 {found[1]})"
            )
        report.copied += 1
        report.bytes += expected[0]
        progress(key, True)
    return report
