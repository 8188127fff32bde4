"""API keys: issued once, stored only as a hash, checked on every request."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict

from openft.domain.entities import KeyScope, Principal, Project
from openft.domain.errors import Unauthenticated
from openft.domain.ids import new_api_key
from openft.services.clock import Clock, system_clock
from openft.store.interface import Store

DEFAULT_PROJECT = "default"
# Verified keys are remembered briefly so a busy client costs one lookup per interval,
# not one per request; a revoked key stops working within this many seconds.
CACHE_SECONDS = 10.0
CACHE_ENTRIES = 10_000


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
    ) -> tuple[str, Project]:
        """Issue a new key for `project_name` (created if new). The key is shown only now."""
        key = new_api_key()
        now = self._clock()
        with self._db.write() as tx:
            project = tx.get_or_create_project(project_name, now)
            tx.insert_key(hash_key(key), project.id, scope, now)
        return key, project

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
            principal = tx.find_principal(hash_key(key))
        if principal is None:
            raise Unauthenticated(
                f"Incorrect API key provided: {_redacted(key)}. An administrator creates keys "
                "with `openft keys create`."
            )
        self._remember(key, principal)
        return principal
