"""The figures behind `/metrics`: counts across the deployment, read from the database at
each scrape (every replica reports the same), and this process's own counters."""

from __future__ import annotations

from dataclasses import dataclass

from openft.domain.operations import OperationsSnapshot
from openft.services.clock import Clock, system_clock
from openft.services.inference import InferenceService
from openft.services.live import LiveEvents
from openft.store.interface import Store


@dataclass(frozen=True, slots=True)
class ProcessCounts:
    """What this process alone did or holds: a scraper sums them over replicas."""

    events_appended: int
    live_followers: int
    chat_tokens_generated: int
    adapters_loaded: int
    adapter_loads: int


class MetricsService:
    def __init__(
        self,
        db: Store,
        live: LiveEvents,
        inference: InferenceService,
        *,
        heartbeat_timeout: int,
        clock: Clock = system_clock,
    ) -> None:
        self._db = db
        self._live = live
        self._inference = inference
        self._heartbeat_timeout = heartbeat_timeout
        self._clock = clock

    def now(self) -> int:
        return self._clock()

    def snapshot(self) -> OperationsSnapshot:
        """Counts across all projects (blocking: it reads the database)."""
        with self._db.read() as tx:
            return tx.operations_snapshot(self._clock() - self._heartbeat_timeout)

    def in_process(self) -> ProcessCounts:
        engine = self._inference.engine
        return ProcessCounts(
            events_appended=self._db.events_appended,
            live_followers=self._live.followers,
            chat_tokens_generated=self._inference.tokens_generated,
            adapters_loaded=engine.adapters_loaded,
            adapter_loads=engine.adapter_loads,
        )
