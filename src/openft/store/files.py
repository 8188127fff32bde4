"""Uploaded files' records. Their bytes are blobs (see services/files.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, insert, select

from openft.domain.entities import FileFormat, Page, StoredFile
from openft.domain.status import ACTIVE
from openft.store.pages import key_of, keyset_page
from openft.store.schema import files, jobs

_FIELDS = [c for c in files.c if c.name != "pk"]


def _to_file(row: Any) -> StoredFile:
    return StoredFile(
        id=row.id,
        project_id=row.project_id,
        filename=row.filename,
        purpose=row.purpose,
        bytes=row.bytes,
        created_at=row.created_at,
        sha256=row.sha256,
        format=FileFormat(row.format) if row.format else None,
        examples=row.examples,
    )


class FileQueries:
    _conn: Connection

    def insert_file(self, file: StoredFile) -> None:
        self._conn.execute(
            insert(files).values(
                id=file.id,
                project_id=file.project_id,
                filename=file.filename,
                purpose=file.purpose,
                bytes=file.bytes,
                created_at=file.created_at,
                sha256=file.sha256,
                format=file.format.value if file.format else None,
                examples=file.examples,
            )
        )

    def get_file(self, project_id: str, file_id: str) -> StoredFile | None:
        row = self._conn.execute(
            select(*_FIELDS).where(files.c.id == file_id, files.c.project_id == project_id)
        ).one_or_none()
        return None if row is None else _to_file(row)

    def list_files(
        self,
        project_id: str,
        *,
        purpose: str | None,
        after: str | None,
        limit: int,
        newest_first: bool,
    ) -> Page[StoredFile]:
        query = select(*_FIELDS).where(files.c.project_id == project_id)
        if purpose is not None:
            query = query.where(files.c.purpose == purpose)
        cursor = None if after is None else key_of(files, after)
        return keyset_page(self._conn, query, files.c.pk, cursor, limit, newest_first, _to_file)

    def delete_file(self, project_id: str, file_id: str) -> bool:
        result = self._conn.execute(
            delete(files).where(files.c.id == file_id, files.c.project_id == project_id)
        )
        return result.rowcount == 1

    def active_job_using(self, file_id: str) -> str | None:
        return self._conn.execute(
            select(jobs.c.id)
            .where(
                (jobs.c.training_file == file_id) | (jobs.c.validation_file == file_id),
                jobs.c.status.in_([s.value for s in ACTIVE]),
            )
            .limit(1)
        ).scalar_one_or_none()
