"""API keys: issued once, stored only as a hash, checked on every request."""

from __future__ import annotations

import hashlib

from openft.domain.entities import KeyScope, Principal, Project
from openft.domain.errors import Unauthenticated
from openft.domain.ids import new_api_key
from openft.services.clock import Clock, system_clock
from openft.store import keys as store
from openft.store.database import Database

DEFAULT_PROJECT = "default"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _redacted(key: str) -> str:
    return key[:6] + "*" * 4 + key[-4:] if len(key) > 12 else "*" * len(key)


class KeyService:
    def __init__(self, db: Database, clock: Clock = system_clock) -> None:
        self._db = db
        self._clock = clock

    def create(
        self, project_name: str = DEFAULT_PROJECT, scope: KeyScope = KeyScope.PROJECT
    ) -> tuple[str, Project]:
        """Issue a new key for `project_name` (created if new). The key is shown only now."""
        key = new_api_key()
        now = self._clock()
        with self._db.write() as conn:
            project = store.get_or_create_project(conn, project_name, now)
            store.insert_key(conn, hash_key(key), project.id, scope, now)
        return key, project

    def authenticate(self, key: str | None) -> Principal:
        if not key:
            raise Unauthenticated(
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). "
                "An administrator creates keys with `openft keys create`.",
                code="missing_api_key",
            )
        with self._db.read() as conn:
            principal = store.find_principal(conn, hash_key(key))
        if principal is None:
            raise Unauthenticated(
                f"Incorrect API key provided: {_redacted(key)}. An administrator creates keys "
                "with `openft keys create`."
            )
        return principal
