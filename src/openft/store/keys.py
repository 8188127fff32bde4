"""Projects and API keys."""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, insert, select

from openft.domain.entities import KeyScope, Principal, Project
from openft.domain.ids import new_project_id
from openft.store.schema import api_keys, projects

_FIND = select(api_keys.c.project_id, api_keys.c.scope).where(
    api_keys.c.key_hash == bindparam("key_hash"), api_keys.c.revoked_at.is_(None)
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

    def insert_key(self, key_hash: str, project_id: str, scope: KeyScope, now: int) -> None:
        self._conn.execute(
            insert(api_keys).values(
                key_hash=key_hash, project_id=project_id, scope=scope.value, created_at=now
            )
        )

    def find_principal(self, key_hash: str) -> Principal | None:
        row = self._conn.execute(_FIND, {"key_hash": key_hash}).one_or_none()
        return None if row is None else Principal(row.project_id, KeyScope(row.scope))
