"""Uploaded files' records. Their bytes live in the blob directory, see services/files.py."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, insert, select

from openft.domain.entities import FileFormat, Page, StoredFile
from openft.domain.status import ACTIVE
from openft.store.pages import keyset_page
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


def insert_file(conn: Connection, file: StoredFile) -> None:
    conn.execute(
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


def get_file(conn: Connection, project_id: str, file_id: str) -> StoredFile | None:
    row = conn.execute(
        select(*_FIELDS).where(files.c.id == file_id, files.c.project_id == project_id)
    ).one_or_none()
    return None if row is None else _to_file(row)


def file_pk(conn: Connection, project_id: str, file_id: str) -> int | None:
    return conn.execute(
        select(files.c.pk).where(files.c.id == file_id, files.c.project_id == project_id)
    ).scalar_one_or_none()


def list_files(
    conn: Connection,
    project_id: str,
    *,
    purpose: str | None,
    after_pk: int | None,
    limit: int,
    newest_first: bool,
) -> Page[StoredFile]:
    query = select(*_FIELDS, files.c.pk).where(files.c.project_id == project_id)
    if purpose is not None:
        query = query.where(files.c.purpose == purpose)
    return keyset_page(conn, query, files.c.pk, after_pk, limit, newest_first, _to_file)


def delete_file(conn: Connection, project_id: str, file_id: str) -> bool:
    result = conn.execute(
        delete(files).where(files.c.id == file_id, files.c.project_id == project_id)
    )
    return result.rowcount == 1


def active_job_using(conn: Connection, file_id: str) -> str | None:
    """The id of an unfinished job that reads this file, if any."""
    return conn.execute(
        select(jobs.c.id)
        .where(
            (jobs.c.training_file == file_id) | (jobs.c.validation_file == file_id),
            jobs.c.status.in_([s.value for s in ACTIVE]),
        )
        .limit(1)
    ).scalar_one_or_none()
