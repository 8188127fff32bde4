"""Blobs in an S3-compatible bucket (AWS S3, Cloudflare R2, GCS interop, Ceph RGW,
SeaweedFS, MinIO), through obstore: Rust's object_store crate, which streams both ways
and uploads anything over one part as a multipart upload, so no blob is held whole in
memory. Chosen over boto3 for that (see docs/benchmarks.md for the figures of both).

The bucket is named by `s3://BUCKET[/PREFIX]`; where it is and who asks come from the
variables every S3 client reads: `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (`AWS_SESSION_TOKEN`), `AWS_REGION`
(default `us-east-1`). Given an endpoint, requests use path-style addressing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import timedelta
from typing import Any, NoReturn
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

from openft.domain.entities import Blob
from openft.domain.errors import BlobMissing, BlobUnavailable
from openft.store.interface import BlobStore

# Multipart part size: at most a few of these are in flight at once, whatever the blob.
PART_BYTES = 8 * 1024 * 1024
PARTS_IN_FLIGHT = 4
READ_CHUNK = 1 << 20
# A request is tried a few times over at most this long, then the caller hears 503:
# an API request must not hang on a bucket that is down.
RETRY_SECONDS = 15


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://BUCKET[/PREFIX]` -> (bucket, prefix without slashes at its ends)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"invalid blob URL {url!r}: expected s3://BUCKET[/PREFIX]")
    return parts.netloc, parts.path.strip("/")


def s3_options(environ: Mapping[str, str]) -> dict[str, Any]:
    """The obstore configuration that the standard AWS variables in `environ` ask for."""
    options: dict[str, Any] = {
        "region": environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    }
    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["endpoint"] = endpoint.rstrip("/")
        options["virtual_hosted_style_request"] = False
    for variable, option in (
        ("AWS_ACCESS_KEY_ID", "access_key_id"),
        ("AWS_SECRET_ACCESS_KEY", "secret_access_key"),
        ("AWS_SESSION_TOKEN", "session_token"),
    ):
        if environ.get(variable):
            options[option] = environ[variable]
    return options


class S3Blobs(BlobStore):
    def __init__(self, url: str, environ: Mapping[str, str] | None = None) -> None:
        bucket, prefix = parse_s3_url(url)
        options = s3_options(os.environ if environ is None else environ)
        self.url = url
        self._store = S3Store(
            bucket,
            prefix=prefix or None,
            client_options={
                "allow_http": str(options.get("endpoint", "")).startswith("http://"),
                "connect_timeout": timedelta(seconds=5),
            },
            retry_config={
                "max_retries": 3,
                "retry_timeout": timedelta(seconds=RETRY_SECONDS),
                "backoff": {"init_backoff": timedelta(milliseconds=100)},
            },
            **options,
        )

    def _fail(self, key: str, exc: Exception) -> NoReturn:
        if isinstance(exc, FileNotFoundError):
            raise BlobMissing(key, self.url) from None
        # The store's message names the request and the status; its first line is enough.
        reason = str(exc).split("\n", 1)[0]
        raise BlobUnavailable(f"The blob store {self.url} failed on {key!r}: {reason}") from exc

    def put(self, key: str, chunks: Iterable[bytes]) -> None:
        try:
            obstore.put(
                self._store,
                key,
                iter(chunks),
                chunk_size=PART_BYTES,
                max_concurrency=PARTS_IN_FLIGHT,
            )
        except (BaseError, FileNotFoundError) as exc:
            self._fail(key, exc)

    def get(self, key: str) -> Blob:
        try:
            result = obstore.get(self._store, key)
        except (BaseError, FileNotFoundError) as exc:
            self._fail(key, exc)
        return Blob(result.meta["size"], self._read(key, result.stream(READ_CHUNK)))

    def _read(self, key: str, stream: Iterable[Any]) -> Iterator[bytes]:
        try:
            for chunk in stream:
                yield bytes(chunk)
        except (BaseError, FileNotFoundError) as exc:
            self._fail(key, exc)

    def delete(self, key: str) -> None:
        try:
            obstore.delete(self._store, key)
        except FileNotFoundError:
            return
        except BaseError as exc:
            self._fail(key, exc)

    def size(self, key: str) -> int | None:
        try:
            return int(obstore.head(self._store, key)["size"])
        except FileNotFoundError:
            return None
        except BaseError as exc:
            self._fail(key, exc)

    def keys(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        try:
            for page in obstore.list(self._store, prefix=prefix or None):
                for meta in page:
                    yield meta["path"], int(meta["size"])
        except (BaseError, FileNotFoundError) as exc:
            self._fail(prefix or "/", exc)
