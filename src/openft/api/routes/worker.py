"""The worker protocol: how a worker (openft's own or any other trainer) claims a job,
reports into it and finishes it. Worker keys only; see docs/workers.md.

Every call but claim names the worker in the `OpenFT-Worker` header and is answered
409 (`lease_lost`) once that worker no longer holds the job: it must stop then.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.responses import StreamingResponse

from openft.api.auth import ServicesDep, WorkerPrincipal
from openft.api.responses import JSON, blob_response
from openft.api.routes.files import _chunks
from openft.domain.entities import EventDraft, EventLevel, EventType, JobError
from openft.domain.errors import InvalidRequest
from openft.wire import checkpoint_json, job_json

router = APIRouter(prefix="/v1/worker", tags=["worker protocol"])
WorkerId = Annotated[str, Header(alias="OpenFT-Worker", min_length=1, max_length=128)]


class ClaimRequest(BaseModel):
    worker_id: str = Field(min_length=1, max_length=128)


class Heartbeat(BaseModel):
    trained_tokens: int | None = None
    estimated_finish: int | None = None


class EventIn(BaseModel):
    message: str
    level: Literal["info", "warn", "error"] = "info"
    type: Literal["message", "metrics"] = "message"
    data: dict[str, Any] = Field(default_factory=dict)
    created_at: int | None = None


class EventBatch(BaseModel):
    batch: int = Field(ge=1, description="Numbers a worker's batches 1, 2, ... per attempt.")
    events: list[EventIn] = Field(max_length=10_000)


class Failure(BaseModel):
    code: str
    message: str
    param: str | None = None


@router.post("/claim", operation_id="workerClaim", responses={204: {"description": "No job"}})
def claim(body: ClaimRequest, services: ServicesDep, _worker: WorkerPrincipal) -> Response:
    assignment = services.worker.claim(body.worker_id)
    if assignment is None:
        return Response(status_code=204)
    return JSON(
        {
            "job": job_json(assignment.job),
            "base_model": {
                "name": assignment.base_model.name,
                "source": assignment.base_model.source,
            },
            "attempt": assignment.attempt,
            "resume_from": checkpoint_json(assignment.resume_from)
            if assignment.resume_from
            else None,
            "reported_step": assignment.reported_step,
            "fine_tuned_model": assignment.fine_tuned_model,
        }
    )


@router.post("/jobs/{job_id}/heartbeat", operation_id="workerHeartbeat")
def heartbeat(
    job_id: str, body: Heartbeat, worker_id: WorkerId, services: ServicesDep, _w: WorkerPrincipal
) -> JSON:
    control = services.worker.heartbeat(
        job_id,
        worker_id,
        trained_tokens=body.trained_tokens,
        estimated_finish=body.estimated_finish,
    )
    return JSON({"control": control})


@router.post("/jobs/{job_id}/events", operation_id="workerReportEvents")
def report_events(
    job_id: str, body: EventBatch, worker_id: WorkerId, services: ServicesDep, _w: WorkerPrincipal
) -> JSON:
    drafts = [
        EventDraft(e.message, EventLevel(e.level), EventType(e.type), e.data, e.created_at)
        for e in body.events
    ]
    applied = services.worker.report(job_id, worker_id, body.batch, drafts)
    return JSON({"applied": applied})


class CheckpointMeta(BaseModel):
    step: int = Field(ge=1)
    metrics: dict[str, float] = Field(default_factory=dict)


class CompletionMeta(BaseModel):
    trained_tokens: int = Field(ge=0)


Meta = TypeVar("Meta", bound=BaseModel)


async def _multipart(request: Request, shape: type[Meta]) -> tuple[Meta, UploadFile]:
    """The `meta` (JSON, checked against `shape`) and `archive` fields of an upload."""
    form = await request.form(max_files=1, max_fields=4)
    meta, upload = form.get("meta"), form.get("archive")
    if not isinstance(meta, str) or not isinstance(upload, UploadFile):
        raise InvalidRequest("Send multipart fields 'meta' (JSON) and 'archive' (a file).")
    try:
        return shape.model_validate_json(meta), upload
    except ValidationError as exc:
        await upload.close()
        raise InvalidRequest(f"Invalid 'meta': {exc.errors()[0]['msg']}.", param="meta") from None


@router.post("/jobs/{job_id}/checkpoints", operation_id="workerAddCheckpoint")
async def add_checkpoint(
    job_id: str, request: Request, worker_id: WorkerId, services: ServicesDep, _w: WorkerPrincipal
) -> JSON:
    meta, archive = await _multipart(request, CheckpointMeta)
    try:
        checkpoint = await run_in_threadpool(
            services.worker.add_checkpoint,
            job_id,
            worker_id,
            meta.step,
            meta.metrics,
            _chunks(archive.file),
        )
    finally:
        await archive.close()
    return JSON(checkpoint_json(checkpoint))


@router.get(
    "/jobs/{job_id}/checkpoints/{checkpoint_id}/archive", operation_id="workerGetCheckpoint"
)
def checkpoint_archive(
    job_id: str, checkpoint_id: str, worker_id: WorkerId, services: ServicesDep, _w: WorkerPrincipal
) -> StreamingResponse:
    blob = services.worker.checkpoint_archive(job_id, worker_id, checkpoint_id)
    return blob_response(blob, "application/gzip")


@router.get("/jobs/{job_id}/files/{file_id}", operation_id="workerGetFile")
def job_file(
    job_id: str, file_id: str, worker_id: WorkerId, services: ServicesDep, _w: WorkerPrincipal
) -> StreamingResponse:
    blob = services.worker.job_file(job_id, worker_id, file_id)
    return blob_response(blob, "application/octet-stream")


@router.post("/jobs/{job_id}/complete", operation_id="workerComplete")
async def complete(
    job_id: str, request: Request, worker_id: WorkerId, services: ServicesDep, _w: WorkerPrincipal
) -> JSON:
    meta, adapter = await _multipart(request, CompletionMeta)
    try:
        job = await run_in_threadpool(
            lambda: services.worker.complete(
                job_id, worker_id, trained_tokens=meta.trained_tokens, adapter=_chunks(adapter.file)
            )
        )
    finally:
        await adapter.close()
    return JSON(job_json(job))


@router.post("/jobs/{job_id}/fail", operation_id="workerFail")
def fail(
    job_id: str, body: Failure, worker_id: WorkerId, services: ServicesDep, _w: WorkerPrincipal
) -> JSON:
    error = JobError(body.code, body.message, body.param)
    return JSON(job_json(services.worker.fail(job_id, worker_id, error)))


@router.post("/jobs/{job_id}/stopped", operation_id="workerStopped")
def stopped(job_id: str, worker_id: WorkerId, services: ServicesDep, _w: WorkerPrincipal) -> JSON:
    return JSON(job_json(services.worker.stopped(job_id, worker_id)))
