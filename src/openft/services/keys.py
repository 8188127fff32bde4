"""API keys: issued once, stored only as a hash, checked on every request."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict

from openft.domain.entities import ApiKey, KeyScope, Principal
from openft.domain.errors import NotFound, Unauthenticated
from openft.domain.ids import new_api_key, new_key_id
from openft.services.clock import Clock, system_clock
from openft.store.interface import Store

DEFAULT_PROJECT = "default"
# Admin keys are organisation-wide; the keys table wants a project, so they are kept
# under this one, which the routes that admin keys may call never read.
ADMIN_PROJECT = "openft-admin"
# Verified keys are remembered briefly so a busy client costs one lookup per interval,
# not one per request; a revoked key stops working within this many seconds.
CACHE_SECONDS = 10.0
CACHE_ENTRIES = 10_000
# A key's `last_used_at` is written at most this often: a busy key costs no writes.
LAST_USED_RESOLUTION = 60


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _redacted(key: str) -> str:
    return key[:6] + "*" * 4 + key[-4:] if len(key) > 12 else "*" * len(key)


class KeyService:
    def __init__(
        self, db: Store, clock: Clock = system_clock, cache_seconds: float = CACHE_SECONDS
    ) -> None:
        self._db = db
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._cache: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()

    def cached(self, key: str | None) -> Principal | None:
        """The principal of a recently verified key, without touching the database."""
        if not key:
            return None
        with self._lock:
            hit = self._cache.get(key)
            if hit is None or hit[0] < time.monotonic():
                return None
            return hit[1]

    def _remember(self, key: str, principal: Principal) -> None:
        with self._lock:
            self._cache[key] = (time.monotonic() + self._cache_seconds, principal)
            self._cache.move_to_end(key)
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)

    def create(
        self, project_name: str = DEFAULT_PROJECT, scope: KeyScope = KeyScope.PROJECT
    ) -> tuple[str, ApiKey]:
        """Issue a new key for `project_name` (created if new). The key is shown only now.
        An admin key belongs to no project of the user's: `project_name` is not used."""
        if scope is KeyScope.ADMIN:
            project_name = ADMIN_PROJECT
        key = new_api_key()
        now = self._clock()
        with self._db.write() as tx:
            project = tx.get_or_create_project(project_name, now)
            record = ApiKey(new_key_id(), project.id, project.name, scope, now)
            tx.insert_key(record.id, hash_key(key), project.id, scope, now)
        return key, record

    def list(self, *, include_revoked: bool = False) -> list[ApiKey]:
        with self._db.read() as tx:
            return tx.list_keys(include_revoked=include_revoked)

    def revoke(self, key_id: str) -> None:
        """Revoke a key: every process refuses it once its cache forgets it (seconds)."""
        with self._db.write() as tx:
            if not tx.revoke_key(key_id, self._clock()):
                raise NotFound(f"No API key {key_id} (or it was already revoked).", param="key_id")

    def authenticate(self, key: str | None) -> Principal:
        """The principal of `key`, or `Unauthenticated` with OpenAI's wording."""
        principal = self.cached(key)
        if principal is not None:
            return principal
        if not key:
            raise Unauthenticated(
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). "
                "An administrator creates keys with `openft keys create`.",
                code="missing_api_key",
            )
        with self._db.read() as tx:
            found = tx.find_key(hash_key(key))
        if found is None:
            raise Unauthenticated(
                f"Incorrect API key provided: {_redacted(key)}. An administrator creates keys "
                "with `openft keys create`."
            )
        now = self._clock()
        if found.last_used_at is None or found.last_used_at <= now - LAST_USED_RESOLUTION:
            with self._db.write() as tx:
                tx.touch_key(found.id, now)
        self._remember(key, found.principal)
        return found.principal
