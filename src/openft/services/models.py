"""The models of a project: the server's base models (to fine-tune and to chat with), and
its fine-tuned models and their checkpoints (to chat with, and to delete)."""

from __future__ import annotations

from openft.domain.entities import BaseModel, Job, ModelInfo, ServedModel, Start
from openft.domain.errors import (
    InvalidRequest,
    ModelUnavailable,
    NotFound,
    PermissionDenied,
)
from openft.domain.naming import job_of_model, split_checkpoint_model
from openft.services.artifacts import Artifacts
from openft.services.clock import Clock, system_clock
from openft.store.interface import Store, Transaction

BASE_OWNER = "openft"
# How many fine-tuned generations a root search follows (each job trained on the one before).
MAX_LINEAGE = 64


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
        with self._db.read() as tx:
            start = self.start(tx, project_id, name)
        if start.job_id is None:
            return ServedModel(name, start.base)
        adapter = self._artifacts.adapter_dir(start.job_id, start.checkpoint_id)
        return ServedModel(name, start.base, adapter)

    def served_now(self, project_id: str, name: str) -> ServedModel | None:
        """`served` when its adapter is unpacked here already (or it is a base model), so
        nothing but the store's read can block; else None: call `served` where it may."""
        with self._db.read() as tx:
            start = self.start(tx, project_id, name)
        if start.job_id is None:
            return ServedModel(name, start.base)
        adapter = self._artifacts.unpacked_dir(start.job_id, start.checkpoint_id)
        return None if adapter is None else ServedModel(name, start.base, adapter)

    def trainable(self, project_id: str, name: str) -> Start:
        """What a new job of the project may start from: a base model, or one of the
        models it may call (its own fine-tuned models and checkpoints, and those shared
        with it), whose adapter the job trains on; else a 400 that says what is on offer."""
        try:
            with self._db.read() as tx:
                return self.start(tx, project_id, name)
        except (NotFound, ModelUnavailable) as exc:
            offered = ", ".join(sorted(self._base)) or "none"
            reason = (
                exc.message
                if isinstance(exc, ModelUnavailable)
                else f"Model {name!r} is not available for fine-tuning on this server."
            )
            raise InvalidRequest(
                f"{reason} Available base models: {offered}; or a fine-tuned model or "
                "checkpoint of this project, or one shared with it.",
                param="model",
                code="model_not_available",
            ) from None

    def callable(self, project_id: str, name: str, param: str) -> None:
        """A 400 at `param` unless the project may call the model `name` (a grader's)."""
        try:
            with self._db.read() as tx:
                self.start(tx, project_id, name)
        except (NotFound, ModelUnavailable) as exc:
            raise InvalidRequest(exc.message, param=param, code="model_not_found") from None

    def start(self, tx: Transaction, project_id: str, name: str) -> Start:
        """Resolve a model name for the project, in the caller's transaction (a 404 for a
        model it may not see, a 503 when its base model is not offered now)."""
        base = self._base.get(name)
        if base is not None:
            return Start(base)
        checkpoint_of = split_checkpoint_model(name)
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
        root = self.root(tx, job)
        base = self._base.get(root)
        if base is None:
            raise ModelUnavailable(
                f"The model {name!r} was trained on {root!r}, which this server does not "
                f"offer now: start it with --model {root}=SOURCE."
            )
        return Start(base, job.id, checkpoint.id if checkpoint else None)

    def root(self, tx: Transaction, job: Job) -> str:
        """The base model under a job's adapter: the job's `model`, or, for a job that went
        on training a fine-tuned model or checkpoint, that model's own root. (The chain is
        followed through the jobs' rows, which outlive a deleted model.)"""
        model = job.model
        for _ in range(MAX_LINEAGE):
            parent_id = job_of_model(model)
            parent = None if model in self._base or parent_id is None else tx.get_job(parent_id)
            if parent is None:
                return model
            model = parent.model
        return model

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
