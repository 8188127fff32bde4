"""Files: streamed to disk while hashed and validated, recorded only once complete.

The bytes of file `file-X` live at `<files dir>/file-X`. An upload is written to a
temporary name and renamed into place before its record is committed, so a record
never points at a partial file; a crash in between leaves at worst an orphan blob.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from openft.domain.entities import Page, Principal, StoredFile
from openft.domain.errors import (
    InvalidCursor,
    InvalidFile,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
)
from openft.domain.ids import new_file_id
from openft.domain.validation import FileValidator
from openft.services.clock import Clock, system_clock
from openft.store import files as store
from openft.store.database import Database

FINE_TUNE = "fine-tune"
FINE_TUNE_RESULTS = "fine-tune-results"
MULTIPART_ALLOWANCE = 64 * 1024
UPLOAD_PURPOSES = frozenset({"assistants", "batch", FINE_TUNE, "vision", "user_data", "evals"})


class FileService:
    def __init__(
        self, db: Database, files_dir: Path, max_bytes: int, clock: Clock = system_clock
    ) -> None:
        self._db = db
        self._dir = files_dir
        self._max_bytes = max_bytes
        self._clock = clock
        files_dir.mkdir(parents=True, exist_ok=True)

    def path(self, file_id: str) -> Path:
        return self._dir / file_id

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
        partial = self._dir / f".upload-{file_id}"
        digest = hashlib.sha256()
        size = 0
        try:
            with open(partial, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if size > self._max_bytes:
                        raise self._too_large()
                    digest.update(chunk)
                    if validator is not None:
                        validator.feed(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            report = validator.finish() if validator is not None else None
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
            os.replace(partial, self.path(file_id))
            try:
                with self._db.write() as conn:
                    store.insert_file(conn, record)
            except BaseException:
                self.path(file_id).unlink(missing_ok=True)
                raise
            return record
        finally:
            partial.unlink(missing_ok=True)

    def get(self, principal: Principal, file_id: str) -> StoredFile:
        with self._db.read() as conn:
            found = store.get_file(conn, principal.project_id, file_id)
        if found is None:
            raise NotFound(
                f"No such File object: {file_id}", param="file_id", code="file_not_found"
            )
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
        with self._db.read() as conn:
            after_pk = None
            if after is not None:
                after_pk = store.file_pk(conn, principal.project_id, after)
                if after_pk is None:
                    raise InvalidCursor(f"No file {after!r} to list after.", param="after")
            return store.list_files(
                conn,
                principal.project_id,
                purpose=purpose,
                after_pk=after_pk,
                limit=limit,
                newest_first=newest_first,
            )

    def delete(self, principal: Principal, file_id: str) -> None:
        with self._db.write() as conn:
            if store.get_file(conn, principal.project_id, file_id) is None:
                raise NotFound(
                    f"No such File object: {file_id}", param="file_id", code="file_not_found"
                )
            job_id = store.active_job_using(conn, file_id)
            if job_id is not None:
                raise InvalidRequest(
                    f"File {file_id} is in use by fine-tuning job {job_id}; "
                    "delete it once the job has finished.",
                    param="file_id",
                    code="file_in_use",
                )
            store.delete_file(conn, principal.project_id, file_id)
        self.path(file_id).unlink(missing_ok=True)

    def content_path(self, principal: Principal, file_id: str) -> tuple[StoredFile, Path]:
        record = self.get(principal, file_id)
        return record, self.path(file_id)
