"""Projects and API keys."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from openft.domain.entities import ApiKey, KeyScope, Project
from openft.domain.ids import new_project_id
from openft.store.schema import api_keys, projects

_KEY = select(
    api_keys.c.id,
    api_keys.c.project_id,
    projects.c.name.label("project_name"),
    api_keys.c.scope,
    api_keys.c.created_at,
    api_keys.c.last_used_at,
    api_keys.c.revoked_at,
).join(projects, projects.c.id == api_keys.c.project_id)
# Every request with a key the process has not seen for a while runs this.
_FIND = _KEY.where(api_keys.c.key_hash == bindparam("key_hash"), api_keys.c.revoked_at.is_(None))


def _to_key(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        project_id=row.project_id,
        project_name=row.project_name,
        scope=KeyScope(row.scope),
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


class KeyQueries:
    _conn: Connection

    def get_or_create_project(self, name: str, now: int) -> Project:
        row = self._conn.execute(select(projects).where(projects.c.name == name)).one_or_none()
        if row is not None:
            return Project(row.id, row.name, row.created_at)
        project = Project(new_project_id(), name, now)
        self._conn.execute(insert(projects).values(id=project.id, name=name, created_at=now))
        return project

    def insert_key(
        self, key_id: str, key_hash: str, project_id: str, scope: KeyScope, now: int
    ) -> None:
        self._conn.execute(
            insert(api_keys).values(
                id=key_id,
                key_hash=key_hash,
                project_id=project_id,
                scope=scope.value,
                created_at=now,
            )
        )

    def find_key(self, key_hash: str) -> ApiKey | None:
        row = self._conn.execute(_FIND, {"key_hash": key_hash}).one_or_none()
        return None if row is None else _to_key(row)

    def list_keys(self, *, include_revoked: bool) -> list[ApiKey]:
        query = _KEY.order_by(api_keys.c.pk)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        return [_to_key(row) for row in self._conn.execute(query)]

    def revoke_key(self, key_id: str, now: int) -> bool:
        statement = (
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return self._conn.execute(statement).rowcount == 1

    def key_is_live(self, key_id: str) -> bool:
        found = self._conn.execute(
            select(api_keys.c.id).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        ).first()
        return found is not None

    def touch_key(self, key_id: str, now: int) -> None:
        self._conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=now))
