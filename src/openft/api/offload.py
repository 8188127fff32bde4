"""Where a request's store work runs: on the event loop or in a worker thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from fastapi.concurrency import run_in_threadpool

from openft.services.container import Services

P = ParamSpec("P")
R = TypeVar("R")


async def read(services: Services, call: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run a read-only service call: inline where the store allows it (see
    `Database.inline_reads`), else in the thread pool. Writes always use the pool."""
    if services.db.inline_reads:
        return call(*args, **kwargs)
    return await run_in_threadpool(call, *args, **kwargs)
