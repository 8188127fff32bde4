"""A reinforcement job's checkpoints through the services: the claim keeps its grader, and
the best three by validation reward are kept (with the newest, which a resume needs)."""

from __future__ import annotations

import json

import pytest

from openft.domain.entities import MethodType, Principal
from openft.domain.errors import NotFound
from openft.services.container import Services
from openft.services.jobs import NewJob

GRADER = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}


def rft_job(services: Services, principal: Principal) -> str:
    rows = [
        {"messages": [{"role": "user", "content": f"question {i}"}], "answer": str(i)}
        for i in range(12)
    ]
    data = ("\n".join(json.dumps(row) for row in rows) + "\n").encode()
    train = services.files.upload(principal, "train.jsonl", "fine-tune", [data]).id
    method = {"type": "reinforcement", "reinforcement": {"grader": GRADER}}
    job = services.jobs.create(principal, NewJob(model="tiny", training_file=train, method=method))
    services.jobs.validate(job.id)
    return job.id


def test_a_claimed_rft_job_keeps_its_grader_and_its_best_checkpoints(
    services: Services, principal: Principal
) -> None:
    job_id = rft_job(services, principal)
    assignment = services.worker.claim("w1")
    assert assignment is not None and assignment.job.id == job_id
    method = assignment.job.method
    assert method.type is MethodType.REINFORCEMENT and method.grader == GRADER
    assert method.hyperparameters.eval_interval == 12  # one epoch of batch_size 1
    assert services.jobs.get(principal, job_id).method == method  # as stored

    rewards = {2: 0.5, 4: 0.9, 6: None, 8: 0.7, 10: 0.2, 12: 0.8}  # 6: saved for a pause
    made = {
        step: services.worker.add_checkpoint(
            job_id,
            "w1",
            step,
            {"step": step} if reward is None else {"step": step, "full_valid_mean_reward": reward},
            [b"x"],
        )
        for step, reward in rewards.items()
    }
    kept = [c.step_number for c in services.checkpoints.list(principal, job_id).items]
    assert kept == [12, 8, 4]  # the best three; the newest is among them
    for step in (2, 6, 10):
        with pytest.raises(NotFound):
            services.worker.checkpoint_archive(job_id, "w1", made[step].id)
    services.worker.add_checkpoint(
        job_id, "w1", 14, {"step": 14, "full_valid_mean_reward": 0.1}, [b"y"]
    )
    kept = [c.step_number for c in services.checkpoints.list(principal, job_id).items]
    assert kept == [14, 12, 8, 4]  # the newest stays too: a resume starts from it
