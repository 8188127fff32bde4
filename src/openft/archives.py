"""tar.gz archives of directories (checkpoints, adapters): packed by workers, checked by
the API as they arrive, unpacked by the serving cache and by workers resuming a job.

Unpacking is safe on every supported Python, 3.11.2 included (whose tarfile has no
extraction filters): only regular files and directories are accepted, each inside the
target, written without the archive's owners or permissions. Anything else (an absolute
path, `..`, a link, a device) refuses the whole archive before a byte is written.
"""

from __future__ import annotations

import posixpath
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

# Where tarfile has extraction filters (3.11.4 and later), "data" checks once more what
# `_check` already did, and keeps 3.12+ from warning about unfiltered extraction.
_FILTER: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


class UnsafeArchive(ValueError):
    """The archive holds a member that could write outside its target, or would unpack to
    more than its limits allow."""


@dataclass(frozen=True)
class Limits:
    """What an archive may unpack to. A LoRA checkpoint is a few files that barely
    compress (weights); a member count or a ratio far beyond that is a bomb, not a model."""

    max_members: int = 10_000
    max_bytes: int = 64 << 30  # unpacked, in all
    # Unpacked bytes may exceed `ratio` times the packed ones only below `ratio_floor`
    # (tokenizer files and configs compress well; a small archive is no threat).
    ratio: int = 100
    ratio_floor: int = 64 << 20


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


def check(stream: BinaryIO, packed_bytes: int, limits: Limits = Limits()) -> None:
    """Read a tar.gz of `packed_bytes` once as a stream and refuse it (UnsafeArchive) if
    `unpack` would, if it would unpack beyond `limits`, or if it is not a readable tar.gz
    at all: what a worker uploads is checked so before it is stored, and the whole
    archive is refused, naming the member."""
    allowed = min(limits.max_bytes, max(limits.ratio_floor, limits.ratio * packed_bytes))
    members = unpacked = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|gz") as tar:
            for member in tar:
                _check(member)
                members += 1
                unpacked += member.size
                if members > limits.max_members:
                    raise UnsafeArchive(
                        f"archive has more than {limits.max_members} members (at {member.name!r})"
                    )
                if unpacked > allowed:
                    raise UnsafeArchive(
                        f"archive unpacks to more than {allowed} bytes "
                        f"(from {packed_bytes} packed; at {member.name!r})"
                    )
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
