"""The blob store a URL names: the one place that turns `--blob-url` into a store."""

from __future__ import annotations

from pathlib import Path

from openft.store.interface import BlobStore
from openft.store.local_blobs import LocalBlobs


def open_blobs(url: str | None, data_dir: Path) -> BlobStore:
    """`s3://BUCKET[/PREFIX]` (an S3-compatible bucket), a local directory (a path or
    `file://` URL), or, when `url` is empty, the data directory itself."""
    if not url:
        local = LocalBlobs(data_dir)
        local.upgrade_layout()
        return local
    if url.startswith("s3://"):
        from openft.store.s3_blobs import S3Blobs  # obstore only where a bucket is used

        return S3Blobs(url)
    if "://" in url and not url.startswith("file://"):
        raise ValueError(f"unsupported blob URL {url!r}: expected s3://BUCKET[/PREFIX] or a path")
    return LocalBlobs(Path(url.removeprefix("file://")))
