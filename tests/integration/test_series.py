"""A job's metrics as series (services/series.py over the store's `metrics_runs`), on
both databases: exact for a short job, downsampled keeping every extreme for a long one,
each step once, and only the project's jobs."""

from __future__ import annotations

import random
from typing import Any

import pytest

from openft.domain.entities import EventDraft, EventType, KeyScope, Principal
from openft.domain.errors import InvalidRequest, NotFound
from openft.services.container import Services
from openft.services.series import MetricSeries, metric_names, metric_series
from tests.integration.test_events_store import make_job

LOSS = ["train_loss", "valid_loss", "full_valid_loss", "train_mean_token_accuracy"]


def metrics(step: int, **values: Any) -> EventDraft:
    return EventDraft(f"Step {step}", type=EventType.METRICS, data={"step": step, **values})


def expected(services: Services, principal: Principal, job_id: str) -> dict[str, Any]:
    """The series computed plainly from the events list: each step once, forward only."""
    events = list(reversed(services.events.list(principal, job_id, limit=1000).items))
    series: dict[str, dict[str, list[Any]]] = {}
    last = None
    for event in events:
        step = event.data.get("step")
        if event.type is not EventType.METRICS or type(step) is not int:
            continue
        if last is not None and step <= last:
            continue
        last = step
        for name, value in event.data.items():
            if name != "step" and type(value) in (int, float):
                column = series.setdefault(name, {"step": [], "value": []})
                column["step"].append(step)
                column["value"].append(value)
    return series


def columns(found: MetricSeries) -> dict[str, Any]:
    return {
        name: {"step": s.steps, "value": s.values} for name, s in found.series.items() if s.steps
    }


def test_a_short_job_comes_back_exactly(services: Services, principal: Principal) -> None:
    job_id = make_job(services, principal)
    drafts = []
    for step in range(1, 41):
        values: dict[str, Any] = {"total_steps": 40, "train_loss": 2.0 - step / 40}
        if step % 10 == 0:
            values["valid_loss"] = 2.1 - step / 40
        if step == 40:
            values["full_valid_loss"] = 1.0
        values["scores"] = {"a": 1.0}  # not a number: not a series
        values["flag"] = True  # nor is a boolean
        drafts.append(metrics(step, **values))
        if step % 7 == 0:
            drafts.append(EventDraft(f"Checkpoint at {step}"))
    services.events.append(job_id, drafts)
    found = metric_series(services.db, principal, job_id, None)
    assert columns(found) == expected(services, principal, job_id)
    assert found.series["valid_loss"].steps == [10, 20, 30, 40]
    assert found.series["full_valid_loss"].values == [1.0]
    assert "scores" not in found.series and "flag" not in found.series
    assert not found.downsampled
    newest = services.events.list(principal, job_id, limit=1).items[0]
    assert found.log.last_seq == newest.seq
    # Asked-for names only, each there even when the job has none of it.
    picked = metric_series(services.db, principal, job_id, ["valid_loss", "train_mean_reward"])
    assert picked.series["valid_loss"].steps == [10, 20, 30, 40]
    assert picked.series["train_mean_reward"].steps == []
    assert set(picked.series) == {"valid_loss", "train_mean_reward"}


def test_a_step_counts_once_and_steps_go_forward(services: Services, principal: Principal) -> None:
    job_id = make_job(services, principal)
    steps = [1, 2, 3, 2, 3, 4, 4, 5, 1, 6]
    services.events.append(
        job_id, [metrics(step, train_loss=float(i)) for i, step in enumerate(steps)]
    )
    found = metric_series(services.db, principal, job_id, ["train_loss"])
    assert found.series["train_loss"].steps == [1, 2, 3, 4, 5, 6]
    assert found.series["train_loss"].values == [0.0, 1.0, 2.0, 5.0, 7.0, 9.0]
    assert columns(found) == expected(services, principal, job_id)


def test_a_long_job_is_downsampled_keeping_every_extreme(
    services: Services, principal: Principal
) -> None:
    job_id = make_job(services, principal)
    rng = random.Random(7)
    total = 3000
    drafts = [
        metrics(
            step,
            train_loss=round(rng.uniform(0, 10), 4),
            **({"valid_loss": round(rng.uniform(0, 10), 4)} if step % 50 == 0 else {}),
        )
        for step in range(1, total + 1)
    ]
    for start in range(0, total, 1000):
        services.events.append(job_id, drafts[start : start + 1000])
    full = metric_series(services.db, principal, job_id, LOSS, max_points=100_000)
    assert not full.downsampled and len(full.series["train_loss"].steps) == total
    found = metric_series(services.db, principal, job_id, LOSS, max_points=200)
    assert found.downsampled
    for name in ("train_loss", "valid_loss"):
        whole, part = full.series[name], found.series[name]
        assert len(part.steps) <= 200
        pairs = dict(zip(whole.steps, whole.values, strict=True))
        # Every point drawn is a real one, in step order, and the extremes, the first and
        # the last are among them.
        assert all(pairs[s] == v for s, v in zip(part.steps, part.values, strict=True))
        assert part.steps == sorted(set(part.steps))
        assert min(part.values) == min(whole.values) and max(part.values) == max(whole.values)
        assert part.steps[0] == whole.steps[0] and part.steps[-1] == whole.steps[-1]
    # valid_loss has 60 points: under the bound, each run keeps all of its few.
    assert found.series["valid_loss"].steps == full.series["valid_loss"].steps


def test_only_the_projects_jobs(services: Services, principal: Principal) -> None:
    job_id = make_job(services, principal)
    _key, other = services.keys.create("someone-else", KeyScope.PROJECT)
    with pytest.raises(NotFound):
        metric_series(services.db, other.principal, job_id, None)
    with pytest.raises(NotFound):
        metric_series(services.db, principal, "ftjob-nonexistent", None)


def test_metric_names_are_checked() -> None:
    assert metric_names(None) is None
    assert metric_names("train_loss, valid_loss,train_loss") == ["train_loss", "valid_loss"]
    for bad in ("", "a,,b", "x" * 65, ",".join(f"m{i}" for i in range(33))):
        with pytest.raises(InvalidRequest) as refused:
            metric_names(bad)
        assert refused.value.param == "metrics"
