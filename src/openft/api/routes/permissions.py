"""Checkpoint permissions (OpenAI's admin API): an admin key shares a fine-tuned model or
one of its checkpoints with other projects. Project and worker keys are refused."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from openft.api.auth import AdminPrincipal, ServicesDep
from openft.api.errors import error_responses
from openft.api.responses import JSON
from openft.api.schemas import CreateCheckpointPermissionRequest
from openft.services.permissions import DEFAULT_LIMIT, MAX_LIMIT
from openft.wire import (
    DeleteFineTuningCheckpointPermissionResponse,
    ListFineTuningCheckpointPermissionResponse,
    permissions_list,
)

router = APIRouter(
    prefix="/v1/fine_tuning/checkpoints",
    tags=["fine-tuning"],
    responses=error_responses(400, 401, 403, 404, 422),
)

# A model name may hold a slash (a base model such as `org/name`): the SDKs send it
# percent-encoded, and the server sees it decoded, so the parameter spans segments.
ModelName = Annotated[
    str,
    Path(description="A checkpoint's model name (`ft:…:ckpt-step-N`) or a fine-tuned model's."),
]


@router.get(
    "/{fine_tuned_model_checkpoint:path}/permissions",
    response_model=ListFineTuningCheckpointPermissionResponse,
    operation_id="listFineTuningCheckpointPermissions",
)
def list_permissions(
    fine_tuned_model_checkpoint: ModelName,
    services: ServicesDep,
    _admin: AdminPrincipal,
    project_id: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=0, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    order: Literal["ascending", "descending"] = "descending",
) -> JSON:
    page = services.permissions.list(
        fine_tuned_model_checkpoint,
        project_id=project_id,
        after=after,
        limit=limit,
        descending=order == "descending",
    )
    return JSON(permissions_list(page.items, page.has_more))


@router.post(
    "/{fine_tuned_model_checkpoint:path}/permissions",
    response_model=ListFineTuningCheckpointPermissionResponse,
    operation_id="createFineTuningCheckpointPermission",
)
def create_permissions(
    fine_tuned_model_checkpoint: ModelName,
    body: CreateCheckpointPermissionRequest,
    services: ServicesDep,
    _admin: AdminPrincipal,
) -> JSON:
    granted = services.permissions.create(fine_tuned_model_checkpoint, body.project_ids)
    return JSON(permissions_list(granted))


@router.delete(
    "/{fine_tuned_model_checkpoint:path}/permissions/{permission_id}",
    response_model=DeleteFineTuningCheckpointPermissionResponse,
    operation_id="deleteFineTuningCheckpointPermission",
)
def delete_permission(
    fine_tuned_model_checkpoint: ModelName,
    permission_id: str,
    services: ServicesDep,
    _admin: AdminPrincipal,
) -> JSON:
    services.permissions.delete(fine_tuned_model_checkpoint, permission_id)
    deleted: DeleteFineTuningCheckpointPermissionResponse = {
        "id": permission_id,
        "object": "checkpoint.permission",
        "deleted": True,
    }
    return JSON(deleted)
