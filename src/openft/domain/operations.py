"""What an operator's scraper is told about the whole deployment at one moment: counts
read from the database, so every replica reports the same figures."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class OperationsSnapshot:
    """Counts across every project, read in one transaction."""

    jobs_by_status: dict[str, int] = field(default_factory=dict)
    # When the longest-waiting queued job was queued (unix seconds); None when none waits.
    oldest_queued_at: int | None = None
    # Running jobs held by a worker; of those, the ones whose worker has been silent past
    # the heartbeat timeout (recovery will take them back).
    leases_held: int = 0
    leases_expired: int = 0
    # Webhook deliveries still to be sent (or retried), and those given up on.
    webhooks_pending: int = 0
    webhooks_failed: int = 0
