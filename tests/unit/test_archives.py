"""Archives unpack safely on every Python: nothing outside the target, no links, no devices."""

from __future__ import annotations

import io
import tarfile
import threading
from pathlib import Path

import pytest

from openft import archives
from openft.unpacked import UnpackedCache


def archive_of(tmp_path: Path, *members: tarfile.TarInfo, data: bytes = b"x") -> Path:
    path = tmp_path / "archive.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            if member.isfile():
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
            else:
                tar.addfile(member)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


def test_a_directory_round_trips(tmp_path: Path) -> None:
    source = tmp_path / "adapter"
    (source / "sub").mkdir(parents=True)
    (source / "adapter_config.json").write_text("{}")
    (source / "sub" / "weights.bin").write_bytes(b"\0\1\2")
    archives.unpack(archives.pack(source, tmp_path / "a.tar.gz"), tmp_path / "out")
    assert (tmp_path / "out" / "adapter_config.json").read_text() == "{}"
    assert (tmp_path / "out" / "sub" / "weights.bin").read_bytes() == b"\0\1\2"


@pytest.mark.parametrize(
    "bad",
    [
        member("../escaped"),
        member("a/../../escaped"),
        member("/etc/escaped"),
        member("link", tarfile.SYMTYPE, "/etc/passwd"),
        member("hard", tarfile.LNKTYPE, "../../etc/passwd"),
        member("device", tarfile.CHRTYPE),
        member("fifo", tarfile.FIFOTYPE),
    ],
    ids=lambda m: m.name,
)
def test_an_unsafe_member_refuses_the_whole_archive(tmp_path: Path, bad: tarfile.TarInfo) -> None:
    archive = archive_of(tmp_path, member("fine.txt"), bad)
    with pytest.raises(archives.UnsafeArchive):
        archives.unpack(archive, tmp_path / "out" / "target")
    assert not (tmp_path / "out" / "target" / "fine.txt").exists()
    assert not (tmp_path / "out" / "escaped").exists() and not (tmp_path / "escaped").exists()


def test_the_cache_keeps_nothing_of_a_refused_archive(tmp_path: Path) -> None:
    cache = UnpackedCache(tmp_path / "cache", max_bytes=1 << 20)
    good = member_bytes(tmp_path, member("fine.txt"))
    directory = cache.directory("models/job/adapter", lambda: [good])
    assert (directory / "fine.txt").read_bytes() == b"x"
    unsafe = member_bytes(tmp_path, member("../../escaped"))
    with pytest.raises(archives.UnsafeArchive):
        cache.directory("models/job/other", lambda: [unsafe])
    # The entry that was there stays whole, and nothing else is left behind.
    assert sorted(p.name for p in (tmp_path / "cache" / "models" / "job").iterdir()) == ["adapter"]
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "cache" / "escaped").exists()


def test_the_cache_says_what_is_ready_without_unpacking_or_waiting(tmp_path: Path) -> None:
    cache = UnpackedCache(tmp_path / "cache", max_bytes=1 << 20)
    good = member_bytes(tmp_path, member("fine.txt"))
    assert cache.ready("models/job/adapter") is None  # not unpacked: nor is it now
    assert not (tmp_path / "cache" / "models").exists()
    directory = cache.directory("models/job/adapter", lambda: [good])
    assert cache.ready("models/job/adapter") == directory
    # While another thread holds the cache (unpacking something), it answers None at once.
    unpacking = threading.Thread(target=cache._lock.acquire)
    unpacking.start()
    unpacking.join()
    try:
        assert cache.ready("models/job/adapter") is None
    finally:
        cache._lock.release()


@pytest.mark.parametrize(
    "bad",
    [member("../escaped"), member("/etc/passwd"), member("link", tarfile.SYMTYPE, "/etc")],
    ids=lambda m: m.name,
)
def test_check_refuses_what_unpack_would_refuse(tmp_path: Path, bad: tarfile.TarInfo) -> None:
    with pytest.raises(archives.UnsafeArchive, match=bad.name):
        archives.check(io.BytesIO(member_bytes(tmp_path, member("fine.txt"), bad)), 100)
    archives.check(io.BytesIO(member_bytes(tmp_path, member("fine.txt"))), 100)


@pytest.mark.parametrize("data", [b"", b"not gzip at all", b"\x1f\x8b\x08\x00garbage"])
def test_check_refuses_what_is_not_a_tar_gz(data: bytes) -> None:
    with pytest.raises(archives.UnsafeArchive, match=r"not a readable tar\.gz"):
        archives.check(io.BytesIO(data), len(data))


def test_check_holds_an_archive_to_its_limits(tmp_path: Path) -> None:
    many = member_bytes(tmp_path, *(member(f"f{i}") for i in range(4)))
    with pytest.raises(archives.UnsafeArchive, match=r"more than 3 members \(at 'f3'"):
        archives.check(io.BytesIO(many), len(many), archives.Limits(max_members=3))
    archives.check(io.BytesIO(many), len(many), archives.Limits(max_members=4))
    packed = archive_of(tmp_path, member("big"), data=bytes(100_000)).read_bytes()
    size = len(packed)  # a few hundred bytes: a ratio in the hundreds
    tight = archives.Limits(ratio=10, ratio_floor=1000)
    with pytest.raises(archives.UnsafeArchive, match=f"more than {10 * size} bytes"):
        archives.check(io.BytesIO(packed), size, tight)
    archives.check(io.BytesIO(packed), size, archives.Limits(ratio=10, ratio_floor=100_000))
    with pytest.raises(archives.UnsafeArchive, match="more than 99999 bytes"):
        archives.check(io.BytesIO(packed), size, archives.Limits(max_bytes=99_999))


def member_bytes(tmp_path: Path, *members: tarfile.TarInfo) -> bytes:
    return archive_of(tmp_path, *members).read_bytes()
