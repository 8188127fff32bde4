"""The worker protocol: how a worker (openft's own or any other trainer) claims a job,
reports into it and finishes it. Worker keys only; see docs/workers.md.

Every call but claim names the worker in the `OpenFT-Worker` header and is answered
409 (`lease_lost`) once that worker no longer holds the job: it must stop then.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.responses import StreamingResponse

from openft import archives
from openft.api.auth import ServicesDep, WorkerPrincipal
from openft.api.errors import error_responses
from openft.api.responses import JSON, blob_response
from openft.api.routes.files import _chunks
from openft.domain.errors import InvalidRequest
from openft.wire import FineTuningJob, FineTuningJobCheckpoint, checkpoint_json, job_json
from openft.worker.protocol import (
    MAX_WORKER_ID,
    WORKER_HEADER,
    BaseModelSource,
    BatchReply,
    CheckpointMeta,
    ClaimReply,
    ClaimRequest,
    CompletionMeta,
    EventBatch,
    Failure,
    GraderCall,
    GraderReply,
    Heartbeat,
    HeartbeatReply,
)

router = APIRouter(
    prefix="/v1/worker",
    tags=["worker protocol"],
    responses=error_responses(400, 401, 403, 404, 409, 422),
)
WorkerId = Annotated[str, Header(alias=WORKER_HEADER, min_length=1, max_length=MAX_WORKER_ID)]


async def _holder(worker: WorkerPrincipal, worker_id: WorkerId) -> str:
    return worker.holder(worker_id)


# Who holds the job a call names: the calling key's id with the worker's name.
Holder = Annotated[str, Depends(_holder)]


def _reply(message: BaseModel) -> JSON:
    return JSON(message.model_dump(mode="json"))


@router.post(
    "/claim",
    operation_id="workerClaim",
    response_model=ClaimReply,
    responses={204: {"description": "No job"}},
)
def claim(body: ClaimRequest, services: ServicesDep, worker: WorkerPrincipal) -> Response:
    assignment = services.worker.claim(
        worker.holder(body.worker_id), name=body.worker_id, key_id=worker.key_id
    )
    if assignment is None:
        return Response(status_code=204)
    resume = assignment.resume_from
    return _reply(
        ClaimReply(
            job=job_json(assignment.job),
            base_model=BaseModelSource(
                name=assignment.base_model.name, source=assignment.base_model.source
            ),
            attempt=assignment.attempt,
            resume_from=checkpoint_json(resume) if resume else None,
            reported_step=assignment.reported_step,
            fine_tuned_model=assignment.fine_tuned_model,
            start_from=assignment.job.model if assignment.start else None,
        )
    )


@router.post(
    "/jobs/{job_id}/heartbeat", operation_id="workerHeartbeat", response_model=HeartbeatReply
)
def heartbeat(job_id: str, body: Heartbeat, worker_id: Holder, services: ServicesDep) -> JSON:
    control = services.worker.heartbeat(
        job_id,
        worker_id,
        trained_tokens=body.trained_tokens,
        estimated_finish=body.estimated_finish,
    )
    return _reply(HeartbeatReply(control=control))


@router.post("/jobs/{job_id}/events", operation_id="workerReportEvents", response_model=BatchReply)
async def report_events(
    job_id: str, body: EventBatch, worker_id: Holder, services: ServicesDep
) -> JSON:
    drafts = [event.draft() for event in body.events]
    # Awaited, not run in a thread: one writer applies the reports, many to a commit.
    applied = await services.worker.report_async(job_id, worker_id, body.batch, drafts)
    return _reply(BatchReply(applied=applied))


Meta = TypeVar("Meta", bound=BaseModel)


async def _multipart(request: Request, shape: type[Meta]) -> tuple[Meta, UploadFile]:
    """The `meta` (JSON, checked against `shape`) and `archive` fields of an upload."""
    form = await request.form(max_files=1, max_fields=4)
    meta, upload = form.get("meta"), form.get("archive")
    if not isinstance(meta, str) or not isinstance(upload, UploadFile):
        raise InvalidRequest("Send multipart fields 'meta' (JSON) and 'archive' (a file).")
    try:
        parsed = shape.model_validate_json(meta)
        # Checked before it is stored: an archive every reader could later unpack safely.
        await run_in_threadpool(archives.check, upload.file, upload.size or 0)
        await run_in_threadpool(upload.file.seek, 0)
    except ValidationError as exc:
        await upload.close()
        raise InvalidRequest(f"Invalid 'meta': {exc.errors()[0]['msg']}.", param="meta") from None
    except archives.UnsafeArchive as exc:
        await upload.close()
        raise InvalidRequest(f"Invalid 'archive': {exc}.", param="archive") from None
    return parsed, upload


@router.post(
    "/jobs/{job_id}/checkpoints",
    operation_id="workerAddCheckpoint",
    response_model=FineTuningJobCheckpoint,
)
async def add_checkpoint(
    job_id: str, request: Request, worker_id: Holder, services: ServicesDep
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
    job_id: str, checkpoint_id: str, worker_id: Holder, services: ServicesDep
) -> StreamingResponse:
    blob = services.worker.checkpoint_archive(job_id, worker_id, checkpoint_id)
    return blob_response(blob, "application/gzip")


@router.post(
    "/jobs/{job_id}/grader/calls", operation_id="workerGraderCall", response_model=GraderReply
)
async def grader_call(
    job_id: str, body: GraderCall, worker_id: Holder, services: ServicesDep
) -> JSON:
    """A reinforcement job's model grader, called by its trainer: chat completions as the
    job's project (the models it may call, nothing else), for the worker holding it."""
    project_id = await run_in_threadpool(services.worker.project_of, job_id, worker_id)
    text, usage = await services.graders.call_model(
        project_id, body.model, body.messages, body.sampling, body.response_format
    )
    return _reply(GraderReply(text=text, usage=usage))


@router.get("/jobs/{job_id}/start/archive", operation_id="workerGetStartAdapter")
def start_archive(job_id: str, worker_id: Holder, services: ServicesDep) -> StreamingResponse:
    blob = services.worker.start_archive(job_id, worker_id)
    return blob_response(blob, "application/gzip")


@router.get("/jobs/{job_id}/files/{file_id}", operation_id="workerGetFile")
def job_file(
    job_id: str, file_id: str, worker_id: Holder, services: ServicesDep
) -> StreamingResponse:
    blob = services.worker.job_file(job_id, worker_id, file_id)
    return blob_response(blob, "application/octet-stream")


@router.post("/jobs/{job_id}/complete", operation_id="workerComplete", response_model=FineTuningJob)
async def complete(job_id: str, request: Request, worker_id: Holder, services: ServicesDep) -> JSON:
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


@router.post("/jobs/{job_id}/fail", operation_id="workerFail", response_model=FineTuningJob)
def fail(job_id: str, body: Failure, worker_id: Holder, services: ServicesDep) -> JSON:
    return JSON(job_json(services.worker.fail(job_id, worker_id, body.error())))


@router.post("/jobs/{job_id}/stopped", operation_id="workerStopped", response_model=FineTuningJob)
def stopped(job_id: str, worker_id: Holder, services: ServicesDep) -> JSON:
    return JSON(job_json(services.worker.stopped(job_id, worker_id)))
