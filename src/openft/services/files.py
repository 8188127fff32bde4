"""Files: streamed to the blob store while hashed and validated, recorded only once complete.

The bytes of file `file-X` are the blob `files/file-X`. A blob is stored whole before its
record is committed, so a record never points at a partial file; a crash in between
leaves at worst an orphan blob.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

from openft.domain.entities import Blob, Page, Principal, StoredFile
from openft.domain.errors import (
    InvalidCursor,
    InvalidFile,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
)
from openft.domain.ids import new_file_id
from openft.domain.validation import FileReport, FileValidator
from openft.services.clock import Clock, system_clock
from openft.store.interface import BlobStore, Store

FINE_TUNE = "fine-tune"
FINE_TUNE_RESULTS = "fine-tune-results"
MULTIPART_ALLOWANCE = 64 * 1024
# OpenAI's upload purposes that its file object can carry back (its schema has no
# "evals" there, so openft, which has no evals, does not take that one).
UPLOAD_PURPOSES = frozenset({"assistants", "batch", FINE_TUNE, "vision", "user_data"})


def blob_key(file_id: str) -> str:
    return f"files/{file_id}"


def file_not_found(file_id: str) -> NotFound:
    return NotFound(f"No such File object: {file_id}", param="file_id", code="file_not_found")


class FileService:
    def __init__(
        self, db: Store, blobs: BlobStore, max_bytes: int, clock: Clock = system_clock
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._max_bytes = max_bytes
        self._clock = clock

    def blob(self, file_id: str) -> Blob:
        """The file's bytes (`BlobMissing` if the store lost them)."""
        return self._blobs.get(blob_key(file_id))

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"The file exceeds this server's upload limit of {self._max_bytes} bytes.",
            param="file",
        )

    def check_request_size(self, request_bytes: int) -> None:
        """Refuse an upload request whose whole body is too large to hold an allowed file.

        The body's multipart framing adds a little to the file, hence the allowance; the
        exact limit is enforced on the file's own bytes while they are written.
        """
        if request_bytes > self._max_bytes + MULTIPART_ALLOWANCE:
            raise self._too_large()

    def upload(
        self,
        principal: Principal,
        filename: str,
        purpose: str,
        chunks: Iterable[bytes],
    ) -> StoredFile:
        if purpose not in UPLOAD_PURPOSES:
            raise InvalidRequest(
                f"Invalid purpose {purpose!r}; "
                f"expected one of: {', '.join(sorted(UPLOAD_PURPOSES))}.",
                param="purpose",
            )
        validator = None
        if purpose == FINE_TUNE:
            if not filename.lower().endswith(".jsonl"):
                raise InvalidFile(
                    "Invalid file format for Fine-Tuning API. Must be .jsonl", param="file"
                )
            validator = FileValidator(filename)
        return self._store(principal.project_id, filename, purpose, chunks, validator)

    def save_result(self, project_id: str, filename: str, data: bytes) -> StoredFile:
        """Record a file the service produced for a project (a job's results)."""
        return self._store(project_id, filename, FINE_TUNE_RESULTS, [data], None)

    def _store(
        self,
        project_id: str,
        filename: str,
        purpose: str,
        chunks: Iterable[bytes],
        validator: FileValidator | None,
    ) -> StoredFile:
        file_id = new_file_id()
        digest = hashlib.sha256()
        size = 0
        report: FileReport | None = None

        def checked() -> Iterator[bytes]:
            # Runs while the blob is written: a file that is too large or invalid stops
            # the write, and the blob store keeps nothing of it.
            nonlocal size, report
            for chunk in chunks:
                size += len(chunk)
                if size > self._max_bytes:
                    raise self._too_large()
                digest.update(chunk)
                if validator is not None:
                    validator.feed(chunk)
                yield chunk
            if validator is not None:
                report = validator.finish()

        key = blob_key(file_id)
        self._blobs.put(key, checked())
        try:
            record = StoredFile(
                id=file_id,
                project_id=project_id,
                filename=filename,
                purpose=purpose,
                bytes=size,
                created_at=self._clock(),
                sha256=digest.hexdigest(),
                format=report.format if report else None,
                examples=report.examples if report else None,
            )
            with self._db.write() as tx:
                tx.insert_file(record)
        except BaseException:
            self._blobs.delete(key)
            raise
        return record

    def get(self, principal: Principal, file_id: str) -> StoredFile:
        with self._db.read() as tx:
            found = tx.get_file(principal.project_id, file_id)
        if found is None:
            raise file_not_found(file_id)
        return found

    def list(
        self,
        principal: Principal,
        *,
        purpose: str | None = None,
        after: str | None = None,
        limit: int = 10_000,
        newest_first: bool = True,
    ) -> Page[StoredFile]:
        with self._db.read() as tx:
            if after is not None and tx.get_file(principal.project_id, after) is None:
                raise InvalidCursor(f"No file {after!r} to list after.", param="after")
            return tx.list_files(
                principal.project_id,
                purpose=purpose,
                after=after,
                limit=limit,
                newest_first=newest_first,
            )

    def delete(self, principal: Principal, file_id: str) -> None:
        with self._db.write() as tx:
            if tx.get_file(principal.project_id, file_id) is None:
                raise file_not_found(file_id)
            job_id = tx.active_job_using(file_id)
            if job_id is not None:
                raise InvalidRequest(
                    f"File {file_id} is in use by fine-tuning job {job_id}; "
                    "delete it once the job has finished.",
                    param="file_id",
                    code="file_in_use",
                )
            tx.delete_file(principal.project_id, file_id)
        self._blobs.delete(blob_key(file_id))

    def content(self, principal: Principal, file_id: str) -> tuple[StoredFile, Blob]:
        record = self.get(principal, file_id)
        return record, self.blob(file_id)
