"""The Files API: upload (multipart, streamed to disk), list, retrieve, delete, content."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, BinaryIO, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import StreamingResponse

from openft.api.auth import CurrentPrincipal, ServicesDep
from openft.api.errors import error_responses
from openft.api.offload import read
from openft.api.responses import JSON, blob_response
from openft.domain.errors import InvalidRequest
from openft.wire import DeleteFileResponse, ListFilesResponse, OpenAIFile, file_json, files_list

router = APIRouter(prefix="/v1/files", tags=["files"], responses=error_responses(401, 422))
CHUNK = 1 << 20

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "example": "fine-tune"},
                    },
                }
            }
        },
    }
}


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK):
        yield chunk


@router.post(
    "",
    response_model=OpenAIFile,
    operation_id="createFile",
    openapi_extra=_UPLOAD_BODY,
    responses=error_responses(400, 413),
)
async def create_file(request: Request, services: ServicesDep, principal: CurrentPrincipal) -> JSON:
    # The body is parsed here, not by FastAPI, so an oversized upload is refused from
    # its Content-Length before a byte of it is read.
    declared = request.headers.get("content-length")
    declared_bytes = int(declared) if declared and declared.isdigit() else None
    if declared_bytes is not None:
        services.files.check_request_size(declared_bytes)
    async with request.form(max_files=1, max_fields=8) as form:
        upload = form.get("file")
        purpose = form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("Missing required parameter: 'file'.", param="file")
        if not isinstance(purpose, str) or not purpose:
            raise InvalidRequest("Missing required parameter: 'purpose'.", param="purpose")
        record = await run_in_threadpool(
            services.files.upload,
            principal,
            upload.filename or "upload",
            purpose,
            _chunks(upload.file),
        )
    return JSON(file_json(record))


@router.get(
    "", response_model=ListFilesResponse, operation_id="listFiles", responses=error_responses(400)
)
async def list_files(
    services: ServicesDep,
    principal: CurrentPrincipal,
    purpose: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> JSON:
    page = await read(
        services,
        services.files.list,
        principal,
        purpose=purpose,
        after=after,
        limit=limit,
        newest_first=order == "desc",
    )
    return JSON(files_list(page))


@router.get(
    "/{file_id}",
    response_model=OpenAIFile,
    operation_id="retrieveFile",
    responses=error_responses(404),
)
async def retrieve_file(file_id: str, services: ServicesDep, principal: CurrentPrincipal) -> JSON:
    return JSON(file_json(await read(services, services.files.get, principal, file_id)))


@router.delete(
    "/{file_id}",
    response_model=DeleteFileResponse,
    operation_id="deleteFile",
    responses=error_responses(400, 404),
)
def delete_file(file_id: str, services: ServicesDep, principal: CurrentPrincipal) -> JSON:
    services.files.delete(principal, file_id)
    deleted: DeleteFileResponse = {"id": file_id, "object": "file", "deleted": True}
    return JSON(deleted)


@router.get(
    "/{file_id}/content",
    operation_id="downloadFile",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, **error_responses(404)},
)
def file_content(
    file_id: str, services: ServicesDep, principal: CurrentPrincipal
) -> StreamingResponse:
    record, blob = services.files.content(principal, file_id)
    return blob_response(blob, "application/octet-stream", record.filename)
