import itertools

import pytest

from openft.domain.entities import JobStatus, MethodType
from openft.domain.errors import InvalidRequest, InvalidTransition
from openft.domain.methods import resolve_method
from openft.domain.status import TERMINAL, can_move, ensure_move, lawful, sources


def test_top_level_hyperparameters_mean_supervised() -> None:
    method = resolve_method({"n_epochs": 3}, None)
    assert method.type is MethodType.SUPERVISED
    assert method.hyperparameters.n_epochs == 3
    assert method.hyperparameters.batch_size == "auto"
    assert method.to_dict() == {
        "type": "supervised",
        "supervised": {
            "hyperparameters": {
                "batch_size": "auto",
                "learning_rate_multiplier": "auto",
                "n_epochs": 3,
                # openft's extensions, with their defaults
                "lora_rank": 8,
                "lora_alpha": 16,
                "lora_dropout": 0.0,
                "lora_target_modules": "all-linear",
                "max_length": 1024,
            }
        },
    }


def test_dpo_method_defaults_beta_to_auto() -> None:
    method = resolve_method(None, {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}})
    assert method.type is MethodType.DPO and method.hyperparameters.beta == 0.2
    assert resolve_method(None, {"type": "dpo"}).hyperparameters.beta == "auto"


@pytest.mark.parametrize(
    ("hyper", "method", "param"),
    [
        (None, {"type": "distillation"}, "method.type"),
        (None, {"type": "reinforcement"}, "method.reinforcement.grader"),
        ({"n_epochs": 2}, {"type": "supervised"}, "hyperparameters"),
        (None, {"type": "supervised", "dpo": {}}, "method.dpo"),
    ],
)
def test_inconsistent_methods_are_refused(hyper, method, param) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequest) as raised:
        resolve_method(hyper, method)
    assert raised.value.param == param


def test_terminal_statuses_go_nowhere() -> None:
    for status in TERMINAL:
        assert not any(can_move(status, target) for target in JobStatus)
    with pytest.raises(InvalidTransition, match="its status is succeeded"):
        ensure_move("ftjob-x", JobStatus.SUCCEEDED, JobStatus.CANCELLED, "cancel")


def test_the_lifecycle_moves_are_allowed() -> None:
    path = [JobStatus.VALIDATING_FILES, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED]
    assert all(can_move(a, b) for a, b in itertools.pairwise(path))
    assert can_move(JobStatus.QUEUED, JobStatus.PAUSED) and can_move(
        JobStatus.PAUSED, JobStatus.QUEUED
    )
    assert not can_move(JobStatus.VALIDATING_FILES, JobStatus.RUNNING)


def test_every_compare_and_set_expects_what_the_table_allows() -> None:
    for source, target in itertools.product(JobStatus, JobStatus):
        assert (source in sources(target)) == can_move(source, target)
    running = frozenset({JobStatus.RUNNING})
    assert lawful(running, JobStatus.QUEUED) == running  # recovery
    with pytest.raises(ValueError, match="no move from queued, succeeded to cancelled"):
        lawful({JobStatus.QUEUED, JobStatus.SUCCEEDED}, JobStatus.CANCELLED)
    with pytest.raises(ValueError, match="no move from nothing"):
        lawful(set(), JobStatus.CANCELLED)
