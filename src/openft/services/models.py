"""The models of a project: the server's base models (to fine-tune and to chat with), and
its fine-tuned models and their checkpoints (to chat with, and to delete)."""

from __future__ import annotations

from openft.domain.entities import BaseModel, ModelInfo, ServedModel
from openft.domain.errors import (
    InvalidRequest,
    ModelUnavailable,
    NotFound,
    PermissionDenied,
)
from openft.domain.naming import split_checkpoint_model
from openft.services.artifacts import Artifacts
from openft.services.clock import Clock, system_clock
from openft.store.interface import Store

BASE_OWNER = "openft"


def model_not_found(name: str) -> NotFound:
    # The same answer for a model of another project: its existence is not revealed.
    return NotFound(
        f"The model {name!r} does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


class ModelService:
    def __init__(
        self,
        db: Store,
        base_models: list[BaseModel],
        started_at: int,
        artifacts: Artifacts,
        clock: Clock = system_clock,
    ) -> None:
        self._db = db
        self._base = {model.name: model for model in base_models}
        self._started_at = started_at
        self._artifacts = artifacts
        self._clock = clock

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
            shared = tx.shared_models(project_id)
        own = [ModelInfo(name, created, project_id) for name, created in tuned]
        # Another project's models granted to this one, owned by the project that made them.
        return models + own + [ModelInfo(name, created, owner) for name, created, owner in shared]

    def retrieve(self, project_id: str, name: str) -> ModelInfo:
        for model in self.list(project_id):
            if model.id == name:
                return model
        raise model_not_found(name)

    def served(self, project_id: str, name: str) -> ServedModel:
        """What a chat completion on `name` runs: a base model; or the project's fine-tuned
        model (`ft:…`) or checkpoint (`ft:…:ckpt-step-N`), or one shared with the project,
        its adapter on its base."""
        base = self._base.get(name)
        if base is not None:
            return ServedModel(name, base)
        checkpoint_of = split_checkpoint_model(name)
        with self._db.read() as tx:
            job = tx.job_of_model(project_id, checkpoint_of[0] if checkpoint_of else name)
            if job is None:  # granted by an admin key (checkpoint permissions)?
                job = tx.shared_job_of_model(project_id, name)
            checkpoint = (
                tx.checkpoint_at_step(job.id, checkpoint_of[1])
                if job is not None and checkpoint_of
                else None
            )
        if job is None or (checkpoint_of and checkpoint is None):
            raise model_not_found(name)
        base = self._base.get(job.model)
        if base is None:
            raise ModelUnavailable(
                f"The model {name!r} was trained on {job.model!r}, which this server does not "
                "offer now: start it with --model "
                f"{job.model}=SOURCE."
            )
        if checkpoint is not None:
            adapter = self._artifacts.checkpoint_adapter_dir(job.id, checkpoint.id)
        else:
            adapter = self._artifacts.adapter_dir(job.id)
        return ServedModel(name, base, adapter)

    def delete(self, project_id: str, name: str) -> None:
        """Delete the project's fine-tuned model: it leaves /v1/models and stops answering
        (its checkpoints' models with it), and its adapter files are removed. The job
        keeps the model's name, as OpenAI's does."""
        if name in self._base:
            raise PermissionDenied(
                f"{name!r} is a base model of this server: only fine-tuned models can be deleted.",
                code="model_not_deletable",
            )
        checkpoint_of = split_checkpoint_model(name)
        if checkpoint_of:
            raise InvalidRequest(
                "A checkpoint's model is deleted with its fine-tuned model: delete "
                f"{checkpoint_of[0]!r}.",
                param="model",
                code="model_not_deletable",
            )
        with self._db.write() as tx:
            job = tx.job_of_model(project_id, name)
            if job is None or not tx.delete_model(job.id, self._clock()):
                raise model_not_found(name)
        self._artifacts.delete_adapters(job.id)
