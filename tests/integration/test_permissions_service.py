"""Checkpoint permissions on both databases: granting, paging, withdrawing, and what a
granted project may then see and call."""

from __future__ import annotations

from pathlib import Path

import pytest

from openft import archives
from openft.domain.entities import KeyScope, Principal
from openft.domain.errors import InvalidRequest, NotFound
from openft.services.container import Services
from openft.services.jobs import NewJob
from openft.testing.data import chat_file


def trained(services: Services, principal: Principal, tmp_path: Path) -> tuple[str, str]:
    """A succeeded job of `principal`'s project: (its model, its step-4 checkpoint's)."""
    train = services.files.upload(principal, "train.jsonl", "fine-tune", [chat_file(20)]).id
    job = services.jobs.create(principal, NewJob(model="tiny", training_file=train))
    services.jobs.validate(job.id)
    services.worker.claim("w1")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    packed = archives.pack(adapter, tmp_path / "adapter.tar.gz").read_bytes()
    checkpoint = services.worker.add_checkpoint(job.id, "w1", 4, {"step": 4}, [packed])
    done = services.worker.complete(job.id, "w1", trained_tokens=5, adapter=[packed])
    assert done.fine_tuned_model
    return done.fine_tuned_model, checkpoint.fine_tuned_model_checkpoint


def other_project(services: Services, name: str = "other") -> Principal:
    return services.keys.create(name, KeyScope.PROJECT)[1].principal


def names(services: Services, principal: Principal) -> list[str]:
    return [model.id for model in services.models.list(principal.project_id)]


def test_a_granted_checkpoint_is_listed_and_served_until_withdrawn(
    services: Services, principal: Principal, tmp_path: Path
) -> None:
    model, checkpoint = trained(services, principal, tmp_path)
    other = other_project(services)
    with pytest.raises(NotFound):
        services.models.served(other.project_id, checkpoint)
    [granted] = services.permissions.create(checkpoint, [other.project_id])
    assert granted.id.startswith("cp_") and granted.project_id == other.project_id
    # Granting again gives the same permission back, not a second one.
    assert services.permissions.create(checkpoint, [other.project_id]) == [granted]
    assert checkpoint in names(services, other) and model not in names(services, other)
    listed = {m.id: m for m in services.models.list(other.project_id)}
    assert listed[checkpoint].owned_by == principal.project_id
    served = services.models.served(other.project_id, checkpoint)
    assert served.adapter is not None and served.base.name == "tiny"
    with pytest.raises(NotFound):  # only the name granted
        services.models.served(other.project_id, model)
    services.permissions.delete(checkpoint, granted.id)
    assert checkpoint not in names(services, other)
    with pytest.raises(NotFound):
        services.models.served(other.project_id, checkpoint)
    with pytest.raises(NotFound, match="No permission"):
        services.permissions.delete(checkpoint, granted.id)


def test_a_fine_tuned_model_can_be_granted_and_goes_with_its_deletion(
    services: Services, principal: Principal, tmp_path: Path
) -> None:
    model, _checkpoint = trained(services, principal, tmp_path)
    other = other_project(services)
    services.permissions.create(model, [other.project_id])
    assert services.models.served(other.project_id, model).adapter is not None
    services.models.delete(principal.project_id, model)
    assert model not in names(services, other)
    with pytest.raises(NotFound):
        services.models.served(other.project_id, model)


def test_pages_filters_and_refusals(
    services: Services, principal: Principal, tmp_path: Path
) -> None:
    _model, checkpoint = trained(services, principal, tmp_path)
    projects = [other_project(services, f"p{i}").project_id for i in range(3)]
    made = services.permissions.create(checkpoint, projects)
    assert [p.project_id for p in made] == projects
    newest = services.permissions.list(checkpoint, limit=2)
    assert [p.id for p in newest.items] == [made[2].id, made[1].id] and newest.has_more
    rest = services.permissions.list(checkpoint, after=made[1].id, limit=2)
    assert [p.id for p in rest.items] == [made[0].id] and not rest.has_more
    oldest = services.permissions.list(checkpoint, descending=False, limit=5)
    assert [p.id for p in oldest.items] == [p.id for p in made]
    with pytest.raises(InvalidRequest) as cursor:
        services.permissions.list(checkpoint, after="cp_nope")
    assert cursor.value.param == "after"
    only = services.permissions.list(checkpoint, project_id=projects[1])
    assert only.items == [made[1]]
    with pytest.raises(InvalidRequest) as unknown:
        services.permissions.create(checkpoint, ["proj_nope"])
    assert unknown.value.param == "project_ids"
    with pytest.raises(InvalidRequest) as owner:
        services.permissions.create(checkpoint, [principal.project_id])
    assert owner.value.param == "project_ids"
    with pytest.raises(NotFound) as missing:
        services.permissions.list(checkpoint.replace("step-4", "step-5"))
    assert missing.value.param == "fine_tuned_model_checkpoint"
    with pytest.raises(NotFound):
        services.permissions.create("ft:nothing", projects)


def test_served_now_answers_without_unpacking_or_not_at_all(
    services: Services, principal: Principal, tmp_path: Path
) -> None:
    """The chat route's lookup on the event loop (`served_now`): a base model at once; a
    fine-tuned model or checkpoint only once `served` has unpacked its adapter here;
    and the same refusals as `served`."""
    model, checkpoint = trained(services, principal, tmp_path)
    project = principal.project_id
    assert services.models.served_now(project, "tiny") == services.models.served(project, "tiny")
    for name in (model, checkpoint):
        assert services.models.served_now(project, name) is None
        assert services.models.served_now(project, name) is None  # asking does not unpack
        served = services.models.served(project, name)
        assert served.adapter is not None
        assert services.models.served_now(project, name) == served
    with pytest.raises(NotFound):
        services.models.served_now(other_project(services).project_id, model)
