"""The SQL implementation of the store's `Transaction`: one class over one connection,
its methods written by table in the modules it is assembled from."""

from __future__ import annotations

from sqlalchemy import Connection, text

from openft.domain.entities import Event
from openft.store.checkpoints import CheckpointQueries
from openft.store.events import EventQueries
from openft.store.files import FileQueries
from openft.store.interface import Transaction
from openft.store.jobs import JobQueries
from openft.store.keys import KeyQueries
from openft.store.operations import OperationsQueries
from openft.store.permissions import PermissionQueries
from openft.store.webhooks import WebhookQueries

_PING = text("SELECT 1")


class SqlTransaction(
    KeyQueries,
    FileQueries,
    JobQueries,
    EventQueries,
    CheckpointQueries,
    PermissionQueries,
    WebhookQueries,
    OperationsQueries,
    Transaction,
):
    def __init__(self, conn: Connection, *, notify: bool = False) -> None:
        self._conn = conn
        self.notify = notify  # PostgreSQL: appends notify other processes' followers
        self.appended: set[str] = set()  # jobs whose events this transaction appended
        self.appended_count = 0  # and how many events, for the metrics once it commits
        self.reported: dict[str, list[Event]] = {}  # the events of reports, by job
        self.unreported: set[str] = set()  # jobs given events other than by a report

    def ping(self) -> None:
        self._conn.execute(_PING)
