"""One contract, two blob stores: a local directory and a real S3 server (SeaweedFS, which
checks request signatures). Whole blobs or none, streamed both ways, errors that say
what happened to which object."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from openft.domain.errors import BlobMissing, BlobUnavailable
from openft.services.blob_migration import migrate
from openft.store.blob_stores import open_blobs
from openft.store.interface import BlobStore
from openft.store.local_blobs import LocalBlobs
from openft.store.s3_blobs import S3Blobs, parse_s3_url, s3_options
from openft.testing.s3 import S3Server
from openft.testing.server import free_port

MiB = 1 << 20


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobs(tmp_path / "blobs")
    return open_blobs(request.getfixturevalue("s3_url"), tmp_path)


def chunks(total: int, size: int = MiB) -> Iterator[bytes]:
    """`total` bytes of a repeatable pattern, in chunks of `size`."""
    block = hashlib.sha256(str(size).encode()).digest() * (size // 32 + 1)
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        yield block[:n]
        sent += n


def digest(stream: Iterator[bytes]) -> tuple[int, str]:
    h, n = hashlib.sha256(), 0
    for chunk in stream:
        h.update(chunk)
        n += len(chunk)
    return n, h.hexdigest()


def test_a_blob_round_trips_in_chunks(store: BlobStore) -> None:
    store.put("files/file-a", [b"hello ", b"world"])
    blob = store.get("files/file-a")
    assert blob.size == 11 and b"".join(blob.chunks) == b"hello world"
    assert store.size("files/file-a") == 11 and store.size("files/file-b") is None


def test_a_large_blob_streams_both_ways(store: BlobStore) -> None:
    # 20 MiB: on S3 a multipart upload of several parts, read back as a stream.
    store.put("checkpoints/ftjob-1/c.tar.gz", chunks(20 * MiB))
    blob = store.get("checkpoints/ftjob-1/c.tar.gz")
    assert blob.size == 20 * MiB
    assert digest(blob.chunks) == digest(chunks(20 * MiB))


def test_a_put_replaces_the_blob_whole(store: BlobStore) -> None:
    store.put("models/ftjob-1/adapter.tar.gz", [b"old"])
    store.put("models/ftjob-1/adapter.tar.gz", [b"new", b"er"])
    assert b"".join(store.get("models/ftjob-1/adapter.tar.gz").chunks) == b"newer"


def test_a_put_that_fails_midway_stores_nothing(store: BlobStore) -> None:
    store.put("files/file-kept", [b"the old bytes"])

    def failing(key: str) -> Iterator[bytes]:
        yield from chunks(12 * MiB)  # past the first multipart part on S3
        raise ValueError(f"the upload of {key} broke")

    for key in ("files/file-new", "files/file-kept"):
        with pytest.raises(ValueError, match="broke"):
            store.put(key, failing(key))
    assert store.size("files/file-new") is None
    assert b"".join(store.get("files/file-kept").chunks) == b"the old bytes"
    assert [key for key, _ in store.keys()] == ["files/file-kept"]


def test_a_missing_blob_is_named_as_missing(store: BlobStore) -> None:
    with pytest.raises(BlobMissing) as caught:
        store.get("files/file-nothing")
    assert "files/file-nothing" in caught.value.message and store.url in caught.value.message
    assert caught.value.status_code == 500 and caught.value.code == "blob_missing"


def test_keys_list_every_blob_under_a_prefix(store: BlobStore) -> None:
    for key in ("files/file-1", "files/file-2", "checkpoints/ftjob-1/c1.tar.gz"):
        store.put(key, [key.encode()])
    assert sorted(store.keys()) == [
        ("checkpoints/ftjob-1/c1.tar.gz", 29),
        ("files/file-1", 12),
        ("files/file-2", 12),
    ]
    assert sorted(k for k, _ in store.keys("files")) == ["files/file-1", "files/file-2"]
    store.delete("files/file-1")
    store.delete("files/file-1")  # deleting what is gone is no error
    assert sorted(k for k, _ in store.keys("files")) == ["files/file-2"]


def test_an_unreachable_bucket_is_unavailable_not_missing(tmp_path: Path) -> None:
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_ACCESS_KEY_ID": "k"}
    down = S3Blobs("s3://bucket/prefix", {**env, "AWS_SECRET_ACCESS_KEY": "s"})
    for call in (lambda: down.get("files/x"), lambda: down.put("files/x", [b"x"])):
        with pytest.raises(BlobUnavailable, match="s3://bucket/prefix") as caught:
            call()
        assert caught.value.status_code == 503


def test_wrong_credentials_are_refused_by_the_server(s3_server: S3Server) -> None:
    wrong = S3Blobs(s3_server.url("x"), {**s3_server.env(), "AWS_SECRET_ACCESS_KEY": "wrong"})
    with pytest.raises(BlobUnavailable, match="files/x"):
        wrong.put("files/x", [b"x"])


def test_the_aws_variables_name_endpoint_region_and_credentials() -> None:
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b")
    for bad in ("bucket", "s3://", "https://bucket/x", "s3://bucket/x?y=1"):
        with pytest.raises(ValueError, match="s3://BUCKET"):
            parse_s3_url(bad)
    assert s3_options({}) == {"region": "us-east-1"}  # the rest from obstore's own lookup
    options = s3_options(
        {
            "AWS_ENDPOINT_URL": "http://general:1",
            "AWS_ENDPOINT_URL_S3": "http://s3-only:2/",
            "AWS_REGION": "eu-west-3",
            "AWS_ACCESS_KEY_ID": "id",
            "AWS_SECRET_ACCESS_KEY": "secret",
        }
    )
    assert options == {
        "region": "eu-west-3",
        "endpoint": "http://s3-only:2",
        "virtual_hosted_style_request": False,  # path-style with an endpoint
        "access_key_id": "id",
        "secret_access_key": "secret",
    }


def test_a_local_store_keeps_only_its_namespaces(tmp_path: Path) -> None:
    local = LocalBlobs(tmp_path)
    (tmp_path / "openft.db").write_bytes(b"not a blob")
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "x").write_bytes(b"not a blob either")
    local.put("files/file-1", [b"1"])
    assert list(local.keys()) == [("files/file-1", 1)]


def test_migrate_copies_verifies_and_resumes(tmp_path: Path, s3_url: str) -> None:
    source = LocalBlobs(tmp_path / "local")
    for i in range(3):
        source.put(f"files/file-{i}", chunks((i + 1) * 3 * MiB))
    source.put("checkpoints/ftjob-1/c.tar.gz", [b"checkpoint"])
    target = open_blobs(s3_url, tmp_path)
    # An earlier run that stopped midway: one blob copied, one left damaged.
    target.put("files/file-0", source.get("files/file-0").chunks)
    damaged = bytearray(b"".join(source.get("files/file-1").chunks))
    damaged[100] ^= 0xFF
    target.put("files/file-1", [bytes(damaged)])

    seen: list[tuple[str, bool]] = []
    report = migrate(source, target, lambda key, copied: seen.append((key, copied)))
    assert (report.copied, report.skipped) == (3, 1)
    assert ("files/file-0", False) in seen and ("files/file-1", True) in seen
    for key, size in source.keys():
        assert target.size(key) == size
        assert digest(target.get(key).chunks) == digest(source.get(key).chunks)
    again = migrate(source, target)
    assert (again.copied, again.skipped) == (0, 4)
