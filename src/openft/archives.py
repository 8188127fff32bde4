"""tar.gz archives of directories (checkpoints, adapters): packed by workers, unpacked by
the blob store and by workers resuming a job.

Unpacking is safe on every supported Python, 3.11.2 included (whose tarfile has no
extraction filters): only regular files and directories are accepted, each inside the
target, written without the archive's owners or permissions. Anything else (an absolute
path, `..`, a link, a device) refuses the whole archive before a byte is written.
"""

from __future__ import annotations

import posixpath
import tarfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO

# Where tarfile has extraction filters (3.11.4 and later), "data" checks once more what
# `_check` already did, and keeps 3.12+ from warning about unfiltered extraction.
_FILTER: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


class UnsafeArchive(ValueError):
    """The archive holds a member that could write outside its target."""


def pack(directory: Path, archive: Path) -> Path:
    """Write `directory`'s contents to the tar.gz `archive`, paths relative to it."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(directory, arcname=".")
    return archive


def _check(member: tarfile.TarInfo) -> None:
    name = posixpath.normpath(member.name)
    if member.name.startswith("/") or name == ".." or name.startswith("../"):
        raise UnsafeArchive(f"archive member {member.name!r} points outside its directory")
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchive(f"archive member {member.name!r} is not a file or a directory")


def check(stream: BinaryIO) -> None:
    """Read a tar.gz once as a stream and refuse it (UnsafeArchive) if `unpack` would,
    or if it is not a readable tar.gz at all: what a worker uploads is checked so before
    it is stored, and the whole archive is refused, naming the member."""
    try:
        with tarfile.open(fileobj=stream, mode="r|gz") as tar:
            for member in tar:
                _check(member)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise UnsafeArchive(f"not a readable tar.gz archive ({exc})") from None


def unpack(archive: Path, target: Path) -> None:
    """Unpack the tar.gz `archive` into the directory `target` (created if need be)."""
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        for member in members:
            _check(member)
        for member in members:
            # set_attrs=False: no owner, mode or time from the archive, only its data.
            tar.extract(member, target, set_attrs=False, **_FILTER)
