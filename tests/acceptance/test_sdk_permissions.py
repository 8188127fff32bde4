"""Checkpoint permissions through the official SDK against a real server: an admin key
shares a trained job's checkpoint with a second project, which then lists it and chats
with it, until the permission is deleted; project keys are refused on those routes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from openai import OpenAI

from openft.settings import Settings
from openft.testing.data import repeat_file
from openft.testing.server import Server, openft_command, running_server, wait_until
from openft.wiring import build_services
from tests.conftest import _fresh_database
from tests.schemas import assert_valid

pytestmark = pytest.mark.slow

SPEC = "openai-checkpoint-permissions.yaml"
# One short epoch is enough: these tests are about who may call a checkpoint, not what
# it answers.
SHORT: Any = {"n_epochs": 1, "batch_size": 4}


@dataclass
class Shared:
    server: Server
    owner: OpenAI  # the project that trained the checkpoint
    other: OpenAI  # a second project, which has no access until granted
    admin: OpenAI
    admin_key: str
    other_project: str
    checkpoint: str  # the checkpoint's model name, `ft:…:ckpt-step-N`


def _client(server: Server, key: str) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key=key, max_retries=0)


def _key(server: Server, *flags: str) -> str:
    """A key made as an operator makes one: `openft keys create`."""
    location = ["--data-dir", str(server.data_dir), "--database-url", server.database_url]
    return openft_command("keys", "create", *flags, *location)


@pytest.fixture(scope="module")
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shared]:
    from openft.training.tiny import build_tiny_model

    model_dir = tmp_path_factory.mktemp("permissions-model")
    build_tiny_model(model_dir, [repeat_file().decode()])
    data_dir = tmp_path_factory.mktemp("permissions")
    # SQLite only: the store's queries are tested on both databases in
    # tests/integration/test_permissions_service.py; this is about the HTTP surface.
    for url in _fresh_database("sqlite", data_dir, request):
        with running_server(
            url, data_dir, f"tiny={model_dir}", worker=True, env={"OPENFT_CHECKPOINT_EVERY": "1"}
        ) as server:
            owner = _client(server, server.key)
            upload = owner.files.create(
                file=("repeat.jsonl", repeat_file(times=3)), purpose="fine-tune"
            )
            job = owner.fine_tuning.jobs.create(
                model="tiny", training_file=upload.id, hyperparameters=SHORT
            )
            _wait_for_success(owner, job.id)
            checkpoint = owner.fine_tuning.jobs.checkpoints.list(job.id).data[0]
            other_key, other_project = _project_key(server, "beta")
            admin_key = _key(server, "--scope", "admin")
            yield Shared(
                server,
                owner,
                _client(server, other_key),
                _client(server, admin_key),
                admin_key,
                other_project,
                checkpoint.fine_tuned_model_checkpoint,
            )


def _wait_for_success(client: OpenAI, job_id: str) -> None:
    def done() -> bool:
        return client.fine_tuning.jobs.retrieve(job_id).status == "succeeded"

    wait_until(done, 300, 0.5, f"job {job_id}")


def _project_key(server: Server, project: str) -> tuple[str, str]:
    """A new project's key and id (`openft keys create` prints the id on stderr)."""
    services = build_services(
        Settings(data_dir=server.data_dir, database_url=server.database_url), []
    )
    try:
        key, record = services.keys.create(project)
    finally:
        services.close()
    return key, record.project_id


def chat(client: OpenAI, model: str) -> Any:
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "repeat cat"}], max_tokens=4
    )


def test_a_shared_checkpoint_is_listed_and_answers_until_the_permission_is_deleted(
    shared: Shared,
) -> None:
    permissions = shared.admin.fine_tuning.checkpoints.permissions
    with pytest.raises(openai.NotFoundError) as before:
        chat(shared.other, shared.checkpoint)
    assert before.value.code == "model_not_found"

    created = permissions.create(shared.checkpoint, project_ids=[shared.other_project])
    page = permissions.with_raw_response.create(
        shared.checkpoint, project_ids=[shared.other_project]
    )
    assert_valid(SPEC, "ListFineTuningCheckpointPermissionResponse", page.http_response.json())
    [permission] = created.data
    assert permission.id.startswith("cp_") and permission.project_id == shared.other_project
    assert permission.object == "checkpoint.permission"

    listed = permissions.list(shared.checkpoint, project_id=shared.other_project)
    assert [p.id for p in listed.data] == [permission.id]  # granting twice gave one
    raw = permissions.with_raw_response.list(shared.checkpoint, order="ascending", limit=1)
    assert_valid(SPEC, "ListFineTuningCheckpointPermissionResponse", raw.http_response.json())

    models = {model.id: model for model in shared.other.models.list()}
    assert models[shared.checkpoint].owned_by != shared.other_project
    completion = chat(shared.other, shared.checkpoint)
    assert completion.model == shared.checkpoint

    deleted = permissions.with_raw_response.delete(
        permission.id, fine_tuned_model_checkpoint=shared.checkpoint
    )
    assert_valid(SPEC, "DeleteFineTuningCheckpointPermissionResponse", deleted.http_response.json())
    assert deleted.parse().deleted
    with pytest.raises(openai.NotFoundError):
        chat(shared.other, shared.checkpoint)
    assert shared.checkpoint not in {model.id for model in shared.other.models.list()}
    assert permissions.list(shared.checkpoint).data == []
    # The owner's own access never depended on a permission.
    assert chat(shared.owner, shared.checkpoint).model == shared.checkpoint


def test_project_keys_are_refused_and_admin_keys_see_no_project(shared: Shared) -> None:
    for client in (shared.owner, shared.other):
        permissions = client.fine_tuning.checkpoints.permissions
        with pytest.raises(openai.PermissionDeniedError) as refused:
            permissions.create(shared.checkpoint, project_ids=[shared.other_project])
        assert refused.value.code == "insufficient_permissions"
        with pytest.raises(openai.PermissionDeniedError):
            permissions.list(shared.checkpoint)
        with pytest.raises(openai.PermissionDeniedError):
            permissions.delete("cp_x", fine_tuned_model_checkpoint=shared.checkpoint)
    with pytest.raises(openai.PermissionDeniedError):
        shared.admin.fine_tuning.jobs.list()
    with pytest.raises(openai.PermissionDeniedError):
        shared.admin.models.list()


def test_unknown_checkpoints_and_projects_are_refused_in_the_envelope(shared: Shared) -> None:
    permissions = shared.admin.fine_tuning.checkpoints.permissions
    with pytest.raises(openai.NotFoundError) as unknown:
        permissions.create("ft:tiny:nobody::ftjob-x:ckpt-step-1", project_ids=["proj_x"])
    assert unknown.value.param == "fine_tuned_model_checkpoint"
    with pytest.raises(openai.BadRequestError) as project:
        permissions.create(shared.checkpoint, project_ids=["proj_nope"])
    assert project.value.param == "project_ids"
    with pytest.raises(openai.NotFoundError):
        permissions.delete("cp_nope", fine_tuned_model_checkpoint=shared.checkpoint)


def test_the_cli_shares_lists_and_unshares_with_an_admin_key(shared: Shared) -> None:
    env = {"OPENFT_BASE_URL": shared.server.base_url, "OPENFT_API_KEY": shared.admin_key}
    granted = openft_command(
        "checkpoints", "share", shared.checkpoint, "--project", shared.other_project, env=env
    )
    [permission_id] = [word for word in granted.split() if word.startswith("cp_")]
    listed = openft_command("checkpoints", "permissions", shared.checkpoint, env=env)
    assert permission_id in listed and shared.other_project in listed
    assert chat(shared.other, shared.checkpoint).model == shared.checkpoint
    openft_command("checkpoints", "unshare", shared.checkpoint, permission_id, env=env)
    assert permission_id not in openft_command(
        "checkpoints", "permissions", shared.checkpoint, env=env
    )
    with pytest.raises(RuntimeError, match="insufficient permissions"):
        openft_command(
            "checkpoints",
            "permissions",
            shared.checkpoint,
            env={**env, "OPENFT_API_KEY": shared.server.key},
        )


def test_a_shared_checkpoint_is_a_base_for_the_other_projects_jobs(shared: Shared) -> None:
    """As OpenAI allows: the second project fine-tunes the checkpoint shared with it (its
    job goes on training the checkpoint's adapter), chats with the result, and may not
    start another job on it once the permission is deleted."""
    permissions = shared.admin.fine_tuning.checkpoints.permissions
    other = shared.other
    upload = other.files.create(file=("repeat.jsonl", repeat_file(times=3)), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as refused:
        other.fine_tuning.jobs.create(
            model=shared.checkpoint, training_file=upload.id, hyperparameters=SHORT
        )
    assert refused.value.code == "model_not_available" and refused.value.param == "model"

    [permission] = permissions.create(shared.checkpoint, project_ids=[shared.other_project]).data
    job = other.fine_tuning.jobs.create(
        model=shared.checkpoint, training_file=upload.id, hyperparameters=SHORT
    )
    assert job.model == shared.checkpoint  # the job names what it started from
    _wait_for_success(other, job.id)
    done = other.fine_tuning.jobs.retrieve(job.id)
    # Named after the base model under the adapter, as OpenAI names such a model.
    assert done.fine_tuned_model is not None
    assert done.fine_tuned_model.startswith("ft:tiny:") and done.fine_tuned_model.endswith(job.id)
    messages = [e.message for e in other.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert "Continuing to train the fine-tuned model's LoRA adapter" in messages
    assert chat(other, done.fine_tuned_model).model == done.fine_tuned_model

    permissions.delete(permission.id, fine_tuned_model_checkpoint=shared.checkpoint)
    with pytest.raises(openai.BadRequestError):
        other.fine_tuning.jobs.create(
            model=shared.checkpoint, training_file=upload.id, hyperparameters=SHORT
        )
    # What was trained from it is the second project's own, and stays.
    assert chat(other, done.fine_tuned_model).model == done.fine_tuned_model

    # The owner fine-tunes its own fine-tuned model likewise.
    owned = shared.owner.fine_tuning.jobs.list(limit=1).data[0]
    assert owned.fine_tuned_model is not None
    again = shared.owner.fine_tuning.jobs.create(
        model=owned.fine_tuned_model, training_file=owned.training_file, hyperparameters=SHORT
    )
    _wait_for_success(shared.owner, again.id)
    second = shared.owner.fine_tuning.jobs.retrieve(again.id).fine_tuned_model
    assert second is not None and second.startswith("ft:tiny:")
    assert chat(shared.owner, second).model == second
