"""GET /v1/fine_tuning/jobs/{id}/metrics: a job's metrics as columns, one per metric
(openft's own API, beside OpenAI's events list, which stays as it is). What a chart
draws, in one answer however long the job: see services/series.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from typing_extensions import TypedDict

from openft.api.auth import CurrentPrincipal, ServicesDep
from openft.api.errors import error_responses
from openft.api.responses import JSON
from openft.domain.ids import event_id
from openft.services.series import (
    DEFAULT_POINTS,
    MAX_POINTS,
    MIN_POINTS,
    MetricSeries,
    metric_names,
    metric_series,
)

router = APIRouter(
    prefix="/v1/fine_tuning/jobs", tags=["openft"], responses=error_responses(401, 422)
)


class SeriesColumns(TypedDict):
    step: list[int]
    value: list[float]


class JobMetrics(TypedDict):
    object: str
    job_id: str
    status: str
    last_event_id: str | None
    downsampled: bool
    metrics: dict[str, SeriesColumns]


def metrics_json(found: MetricSeries) -> JobMetrics:
    log = found.log
    return {
        "object": "fine_tuning.job.metrics",
        "job_id": log.job_id,
        "status": log.status.value,
        "last_event_id": event_id(log.event_key, log.last_seq) if log.last_seq else None,
        "downsampled": found.downsampled,
        "metrics": {
            name: {"step": series.steps, "value": series.values}
            for name, series in found.series.items()
        },
    }


@router.get(
    "/{fine_tuning_job_id}/metrics",
    response_model=JobMetrics,
    operation_id="getFineTuningJobMetrics",
    responses=error_responses(400, 404),
    summary="A job's metrics as series (openft)",
    description="The metrics events' values as one column per metric: `step` and `value` "
    "arrays, by ascending step. A job with at most `max_points` events comes back whole; a "
    "longer one is downsampled keeping each run's first, lowest, highest and last point "
    "(`downsampled: true`). `last_event_id` is the newest event the series include: follow "
    "the events stream from it (`Last-Event-ID`) for what comes next.",
)
async def job_metrics(
    fine_tuning_job_id: Annotated[str, Path(description="The ID of the fine-tuning job.")],
    services: ServicesDep,
    principal: CurrentPrincipal,
    metrics: Annotated[
        str | None,
        Query(
            description="Comma-separated metric names (e.g. `train_loss,valid_loss`); "
            "every numeric metric when left out.",
            max_length=4096,
        ),
    ] = None,
    max_points: Annotated[
        int,
        Query(ge=MIN_POINTS, le=MAX_POINTS, description="The most points a series holds."),
    ] = DEFAULT_POINTS,
) -> JSON:
    names = metric_names(metrics)
    # A long log is a second of work: off the event loop, whatever the database.
    found = await run_in_threadpool(
        metric_series, services.db, principal, fine_tuning_job_id, names, max_points
    )
    return JSON(metrics_json(found))
