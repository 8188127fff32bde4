"""The models a project can fine-tune (the server's base models) and its fine-tuned ones."""

from __future__ import annotations

from openft.domain.entities import BaseModel, ModelInfo
from openft.domain.errors import InvalidRequest, NotFound
from openft.store.interface import Store

BASE_OWNER = "openft"


class ModelService:
    def __init__(self, db: Store, base_models: list[BaseModel], started_at: int) -> None:
        self._db = db
        self._base = {model.name: model for model in base_models}
        self._started_at = started_at

    def base_model(self, name: str) -> BaseModel:
        """The base model called `name`, or a 400 that lists the ones on offer."""
        model = self._base.get(name)
        if model is None:
            offered = (
                ", ".join(sorted(self._base)) or "none (start the server with --model NAME=SOURCE)"
            )
            raise InvalidRequest(
                f"Model {name!r} is not available for fine-tuning on this server. "
                f"Available base models: {offered}.",
                param="model",
                code="model_not_available",
            )
        return model

    def list(self, project_id: str) -> list[ModelInfo]:
        models = [ModelInfo(name, self._started_at, BASE_OWNER) for name in sorted(self._base)]
        with self._db.read() as tx:
            tuned = tx.fine_tuned_models(project_id)
        return models + [ModelInfo(name, created, project_id) for name, created in tuned]

    def retrieve(self, project_id: str, name: str) -> ModelInfo:
        for model in self.list(project_id):
            if model.id == name:
                return model
        raise NotFound(f"The model {name!r} does not exist.", param="model", code="model_not_found")
