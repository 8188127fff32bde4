"""A job's metrics as series, one per metric: what its charts draw, read in one pass.

A chart needs each metric's (step, value) pairs, not every event's JSON: the console used
to replay the whole event stream for its curves (22 MB for a million steps). Here the
metrics events' data is folded run by run as the store reads it. A job with at most
`max_points` events comes back exactly; a longer one is cut into `max_points / 4` runs of
consecutive events and each series keeps, per run, its first, lowest, highest and last
point (M4 downsampling: every extreme survives, so a line drawn from it covers the same
pixels as one drawn from every point, and the last point is the newest one).

A step counts once, the first time it is reported, and steps only go forward, as the
console charts them (a resumed attempt's repeated steps are dropped by the worker's
reports already). Values that are not numbers (a metric's `scores` object, say) are not
series; booleans are not numbers here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice
from operator import itemgetter, lt
from typing import Any

from openft.domain.entities import EventLog, Principal
from openft.domain.errors import InvalidRequest
from openft.services.events import job_not_found
from openft.store.interface import Store

DEFAULT_POINTS = 2000
MIN_POINTS = 4
MAX_POINTS = 100_000
MAX_METRICS = 32
MAX_NAME = 64
# Points each series keeps of a run when downsampling: first, lowest, highest, last.
PER_RUN = 4
_STEP = itemgetter("step")
_NUMBERS = frozenset((int, float))  # not bool: type(True) is bool


@dataclass
class Series:
    """One metric's points, by ascending step."""

    steps: list[int] = field(default_factory=list)
    values: list[float | int] = field(default_factory=list)


@dataclass(frozen=True)
class MetricSeries:
    log: EventLog  # the log as it stood when read: the series hold every event up to it
    series: dict[str, Series]
    downsampled: bool  # whether a series lost points


def metric_names(text: str | None) -> list[str] | None:
    """The `metrics` parameter (comma-separated names) as a list; None: every metric."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",")]
    if not all(names) or any(len(name) > MAX_NAME for name in names):
        raise InvalidRequest(
            f"'metrics' is a comma-separated list of metric names of 1 to {MAX_NAME} "
            "characters, such as train_loss,valid_loss.",
            param="metrics",
        )
    if len(set(names)) > MAX_METRICS:
        raise InvalidRequest(f"'metrics' names at most {MAX_METRICS} metrics.", param="metrics")
    return list(dict.fromkeys(names))


class SeriesBuilder:
    """Folds runs of metrics events' data, oldest first, into series."""

    def __init__(self, names: Sequence[str] | None, *, downsample: bool) -> None:
        self._names = None if names is None else frozenset(names)
        self._downsample = downsample
        self.series: dict[str, Series] = {name: Series() for name in names or ()}
        self.downsampled = False
        self._last_step = -math.inf

    def add(self, run: list[dict[str, Any]]) -> None:
        rows, steps = self._fresh_steps(run)
        if not rows:
            return
        present = set().union(*rows)
        present.discard("step")
        for name in present if self._names is None else present & self._names:
            values: list[Any] = [row.get(name) for row in rows]
            if set(map(type, values)) <= _NUMBERS:  # in every row: no per-row check
                kept_steps, kept = steps, values
            else:
                at = [i for i, value in enumerate(values) if type(value) in _NUMBERS]
                kept_steps, kept = [steps[i] for i in at], [values[i] for i in at]
            if not kept:
                continue
            if self._downsample and len(kept) > PER_RUN:
                ends = {0, kept.index(min(kept)), kept.index(max(kept)), len(kept) - 1}
                at = sorted(ends)
                kept_steps, kept = [kept_steps[i] for i in at], [kept[i] for i in at]
                self.downsampled = True
            series = self.series.setdefault(name, Series())
            series.steps += kept_steps
            series.values += kept

    def _fresh_steps(self, run: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int]]:
        """The run's rows with an integer step past every step seen, each step once, in
        step order (the first of a step kept), and their steps."""
        steps: list[Any] = [row.get("step") for row in run]
        # The usual case, checked at C speed: integer steps, in order, all new.
        if (
            steps
            and set(map(type, steps)) == {int}
            and steps[0] > self._last_step
            and all(map(lt, steps, islice(steps, 1, None)))
        ):
            self._last_step = steps[-1]
            return run, steps
        rows = sorted((row for row in run if type(row.get("step")) is int), key=_STEP)
        fresh = []
        for row in rows:
            if row["step"] > self._last_step:
                fresh.append(row)
                self._last_step = row["step"]
        return fresh, [row["step"] for row in fresh]


def metric_series(
    db: Store,
    principal: Principal,
    job_id: str,
    names: Sequence[str] | None,
    max_points: int = DEFAULT_POINTS,
) -> MetricSeries:
    """The job's metrics as series, each of at most `max_points` points (see above)."""
    with db.read() as tx:
        log = tx.event_log(job_id, principal.project_id)
        if log is None:
            raise job_not_found(job_id)
        exact = log.last_seq <= max_points
        run_events = max(1, log.last_seq if exact else -(-log.last_seq // (max_points // PER_RUN)))
        builder = SeriesBuilder(names, downsample=not exact)
        for run in tx.metrics_runs(job_id, through_seq=log.last_seq, run_events=run_events):
            builder.add(run)
    return MetricSeries(log, builder.series, builder.downsampled)
