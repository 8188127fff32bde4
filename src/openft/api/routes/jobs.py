"""The fine-tuning jobs API and its events endpoint (the seeds' contract)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Header, Path, Query, Request
from starlette.responses import Response, StreamingResponse

from openft.api.auth import CurrentPrincipal, ServicesDep
from openft.api.errors import error_responses
from openft.api.offload import read
from openft.api.responses import JSON
from openft.api.schemas import CreateJobRequest
from openft.api.sse import MEDIA_TYPE, STREAM_HEADERS, accepts_gzip, event_stream
from openft.domain.entities import MetadataFilter
from openft.domain.errors import InvalidRequest
from openft.services.events import DEFAULT_LIMIT, MAX_LIMIT
from openft.services.jobs import NewJob
from openft.wire import (
    FineTuningJob,
    ListFineTuningJobCheckpointsResponse,
    ListFineTuningJobEventsResponse,
    ListPaginatedFineTuningJobsResponse,
    checkpoints_list,
    events_list,
    job_json,
    jobs_list,
)

router = APIRouter(
    prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"], responses=error_responses(401, 422)
)

JobId = Annotated[str, Path(description="The ID of the fine-tuning job.")]


def _metadata_filter(request: Request) -> MetadataFilter | None:
    """OpenAI's deep-object filter: `metadata[k]=v` (all must match), or `metadata=null`."""
    params = request.query_params
    pairs = {
        name[len("metadata[") : -1]: value
        for name, value in params.multi_items()
        if name.startswith("metadata[") and name.endswith("]")
    }
    if "metadata" not in params:
        return MetadataFilter(pairs) if pairs else None
    if params["metadata"] != "null":
        raise InvalidRequest(
            "Filter by metadata with metadata[KEY]=VALUE, or metadata=null.", param="metadata"
        )
    if pairs:
        raise InvalidRequest(
            "Do not combine metadata=null with metadata[KEY]=VALUE.", param="metadata"
        )
    return MetadataFilter(None)


@router.post(
    "",
    response_model=FineTuningJob,
    operation_id="createFineTuningJob",
    responses=error_responses(400),
)
def create_job(
    body: CreateJobRequest,
    background: BackgroundTasks,
    services: ServicesDep,
    principal: CurrentPrincipal,
) -> JSON:
    job = services.jobs.create(
        principal,
        NewJob(
            model=body.model,
            training_file=body.training_file,
            validation_file=body.validation_file,
            hyperparameters=body.hyperparameters.model_dump() if body.hyperparameters else None,
            method=body.method.model_dump() if body.method else None,
            suffix=body.suffix,
            seed=body.seed,
            metadata=body.metadata,
            integrations=body.integrations,
        ),
    )
    # Files are validated after the answer, as OpenAI does: the job is `validating_files`
    # now, and moves to `queued` (or `failed`) moments later.
    background.add_task(services.jobs.validate, job.id)
    return JSON(job_json(job), background=background)


@router.get(
    "",
    response_model=ListPaginatedFineTuningJobsResponse,
    operation_id="listPaginatedFineTuningJobs",
    responses=error_responses(400),
    openapi_extra={
        "parameters": [
            {
                "name": "metadata",
                "in": "query",
                "required": False,
                "style": "deepObject",
                "schema": {"type": "object", "additionalProperties": {"type": "string"}},
                "description": "metadata[k]=v keeps jobs whose metadata has k=v; "
                "metadata=null keeps jobs without metadata.",
            }
        ]
    },
)
async def list_jobs(
    request: Request,
    services: ServicesDep,
    principal: CurrentPrincipal,
    after: str | None = None,
    limit: Annotated[int, Query(ge=0, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> JSON:
    metadata = _metadata_filter(request)
    page = await read(
        services, services.jobs.list, principal, after=after, limit=limit, metadata=metadata
    )
    return JSON(jobs_list(page))


@router.get(
    "/{fine_tuning_job_id}",
    response_model=FineTuningJob,
    operation_id="retrieveFineTuningJob",
    responses=error_responses(404),
)
async def retrieve_job(
    fine_tuning_job_id: JobId, services: ServicesDep, principal: CurrentPrincipal
) -> JSON:
    return JSON(job_json(await read(services, services.jobs.get, principal, fine_tuning_job_id)))


@router.post(
    "/{fine_tuning_job_id}/cancel",
    response_model=FineTuningJob,
    operation_id="cancelFineTuningJob",
    responses=error_responses(400, 404, 409),
)
def cancel_job(
    fine_tuning_job_id: JobId, services: ServicesDep, principal: CurrentPrincipal
) -> JSON:
    return JSON(job_json(services.jobs.cancel(principal, fine_tuning_job_id)))


@router.post(
    "/{fine_tuning_job_id}/pause",
    response_model=FineTuningJob,
    operation_id="pauseFineTuningJob",
    responses=error_responses(400, 404, 409),
)
def pause_job(
    fine_tuning_job_id: JobId, services: ServicesDep, principal: CurrentPrincipal
) -> JSON:
    return JSON(job_json(services.jobs.pause(principal, fine_tuning_job_id)))


@router.post(
    "/{fine_tuning_job_id}/resume",
    response_model=FineTuningJob,
    operation_id="resumeFineTuningJob",
    responses=error_responses(400, 404, 409),
)
def resume_job(
    fine_tuning_job_id: JobId, services: ServicesDep, principal: CurrentPrincipal
) -> JSON:
    return JSON(job_json(services.jobs.resume(principal, fine_tuning_job_id)))


@router.get(
    "/{fine_tuning_job_id}/events",
    response_model=ListFineTuningJobEventsResponse,
    operation_id="listFineTuningEvents",
    responses={
        200: {
            "content": {
                MEDIA_TYPE: {
                    "schema": {"type": "string"},
                    "description": "With `stream=true` (or `Accept: text/event-stream`).",
                }
            }
        },
        **error_responses(400, 404),
    },
    summary="List fine-tuning events",
    description="Get status updates for a fine-tuning job. With `stream=true` (or `Accept: "
    "text/event-stream`), follow them live as server-sent events, oldest first, from the "
    "event after `Last-Event-ID` (or the first), ending with `data: [DONE]` once the job "
    "has ended.",
)
async def list_events(
    request: Request,
    fine_tuning_job_id: Annotated[
        str, Path(description="The ID of the fine-tuning job to get events for.")
    ],
    services: ServicesDep,
    principal: CurrentPrincipal,
    after: Annotated[
        str | None,
        Query(description="Identifier for the last event from the previous pagination request."),
    ] = None,
    limit: Annotated[
        int | None, Query(ge=0, le=MAX_LIMIT, description="Number of events to retrieve.")
    ] = None,
    stream: Annotated[
        bool, Query(description="Follow the events live, as server-sent events.")
    ] = False,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", description="When streaming: go on after this event."),
    ] = None,
) -> Response:
    if stream or MEDIA_TYPE in request.headers.get("accept", ""):
        seen = await services.live.start(principal, fine_tuning_job_id, last_event_id)
        headers = {**STREAM_HEADERS, "vary": "accept-encoding"}
        gzip = accepts_gzip(request.headers.get("accept-encoding", ""))
        if gzip:
            headers["content-encoding"] = "gzip"
        frames = event_stream(services.live, fine_tuning_job_id, seen, gzip=gzip)
        return StreamingResponse(frames, media_type=MEDIA_TYPE, headers=headers)
    page = await services.events.list_async(
        principal,
        fine_tuning_job_id,
        after=after,
        limit=DEFAULT_LIMIT if limit is None else limit,
    )
    return JSON(events_list(page))


@router.get(
    "/{fine_tuning_job_id}/checkpoints",
    response_model=ListFineTuningJobCheckpointsResponse,
    operation_id="listFineTuningJobCheckpoints",
    responses=error_responses(400, 404),
)
async def list_checkpoints(
    fine_tuning_job_id: JobId,
    services: ServicesDep,
    principal: CurrentPrincipal,
    after: str | None = None,
    limit: Annotated[int, Query(ge=0, le=MAX_LIMIT)] = 10,
) -> JSON:
    page = await read(
        services, services.checkpoints.list, principal, fine_tuning_job_id, after=after, limit=limit
    )
    return JSON(checkpoints_list(page))
