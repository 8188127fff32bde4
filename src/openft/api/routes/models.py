"""GET /v1/models: the base models on offer and the project's fine-tuned models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from openft.api.auth import CurrentPrincipal, ServicesDep
from openft.api.schemas import ModelList, ModelObject, model_json

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ModelList, operation_id="listModels")
def list_models(services: ServicesDep, principal: CurrentPrincipal) -> dict[str, Any]:
    models = services.models.list(principal.project_id)
    return {"object": "list", "data": [model_json(m) for m in models]}


@router.get("/{model:path}", response_model=ModelObject, operation_id="retrieveModel")
def retrieve_model(
    model: str, services: ServicesDep, principal: CurrentPrincipal
) -> dict[str, Any]:
    return model_json(services.models.retrieve(principal.project_id, model))
