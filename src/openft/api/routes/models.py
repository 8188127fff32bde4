"""/v1/models: the base models on offer and the project's fine-tuned models; deleting one."""

from __future__ import annotations

from fastapi import APIRouter

from openft.api.auth import CurrentPrincipal, ServicesDep
from openft.api.errors import error_responses
from openft.api.offload import read
from openft.api.responses import JSON
from openft.wire import DeleteModelResponse, ListModelsResponse, Model, model_json, models_list

router = APIRouter(prefix="/v1/models", tags=["models"], responses=error_responses(401))


@router.get("", response_model=ListModelsResponse, operation_id="listModels")
async def list_models(services: ServicesDep, principal: CurrentPrincipal) -> JSON:
    models = await read(services, services.models.list, principal.project_id)
    return JSON(models_list(models))


@router.get(
    "/{model:path}",
    response_model=Model,
    operation_id="retrieveModel",
    responses=error_responses(404),
)
async def retrieve_model(model: str, services: ServicesDep, principal: CurrentPrincipal) -> JSON:
    found = await read(services, services.models.retrieve, principal.project_id, model)
    return JSON(model_json(found))


@router.delete(
    "/{model:path}",
    response_model=DeleteModelResponse,
    operation_id="deleteModel",
    responses=error_responses(400, 403, 404),
)
async def delete_model(model: str, services: ServicesDep, principal: CurrentPrincipal) -> JSON:
    await services.inference.delete_model(principal.project_id, model)
    deleted: DeleteModelResponse = {"id": model, "object": "model", "deleted": True}
    return JSON(deleted)
