"""`/metrics` for an operator: Prometheus' text format, parsed by prometheus-client's own
parser, from a real server; admin keys only on the API's port, no key on
`OPENFT_METRICS_ADDRESS`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from openft.domain.status import TERMINAL
from openft.testing.data import toy_chat_file
from openft.testing.server import Server, free_port, running_server, wait_until
from tests.conftest import _fresh_database

JOB_ROUTE = "/v1/fine_tuning/jobs/{fine_tuning_job_id}"


def samples(text: str) -> list[Sample]:
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def value(found: list[Sample], name: str, **labels: str) -> float:
    matching = [s.value for s in found if s.name == name and labels.items() <= s.labels.items()]
    assert len(matching) == 1, f"{name} {labels}: {matching}"
    return matching[0]


def scrape(root: str, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{root}/metrics", headers=headers, timeout=30)


@pytest.fixture
def metrics_address() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
def server(
    request: pytest.FixtureRequest, tmp_path: Path, metrics_address: str
) -> Iterator[Server]:
    for url in _fresh_database("sqlite", tmp_path, request):
        env = {"OPENFT_METRICS_ADDRESS": metrics_address}
        with running_server(url, tmp_path, env=env) as server:
            yield server


def test_metrics_answer_admin_keys_only_and_the_scrape_address_without_one(
    server: Server, metrics_address: str
) -> None:
    client = OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)
    for _ in range(3):  # three ids, one route: a series per template, not per id
        with pytest.raises(Exception, match="404"):
            client.fine_tuning.jobs.retrieve(f"ftjob-missing{_}")

    assert scrape(server.root_url, None).status_code == 401
    refused = scrape(server.root_url, server.key)  # a project key
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_permissions"

    answer = scrape(server.root_url, server.new_key("operators", scope="admin"))
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    found = samples(answer.text)
    labels = {"method": "GET", "route": JOB_ROUTE}
    assert value(found, "openft_http_requests_total", status="404", **labels) == 3
    assert value(found, "openft_http_request_duration_seconds_count", **labels) == 3
    buckets = [s for s in found if s.name == "openft_http_request_duration_seconds_bucket"]
    assert {s.labels["le"] for s in buckets if s.labels["route"] == JOB_ROUTE} >= {"0.01", "+Inf"}
    assert not any("ftjob-missing" in s.labels.get("route", "") for s in found)
    assert value(found, "openft_database_up") == 1
    assert value(found, "openft_jobs", status="queued") == 0

    # The scraper's address: the same registry, no key asked.
    unkeyed = httpx.get(f"http://{metrics_address}/metrics", timeout=30)
    assert unkeyed.status_code == 200
    unkeyed_samples = samples(unkeyed.text)
    assert value(unkeyed_samples, "openft_http_requests_total", status="401", route="/metrics") == 1


TRAINING_ENV = {"OPENFT_HEARTBEAT_SECONDS": "1", "OPENFT_HEARTBEAT_TIMEOUT_SECONDS": "20"}
FAST: Any = {"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 100}


@pytest.fixture
def trainer(request: pytest.FixtureRequest, tmp_path: Path, tiny_model: Path) -> Iterator[Server]:
    for url in _fresh_database("sqlite", tmp_path, request):
        model = f"tiny={tiny_model}"
        with running_server(url, tmp_path, model, worker=True, env=TRAINING_ENV) as server:
            yield server


@pytest.mark.slow
def test_metrics_after_a_job_ran(trainer: Server) -> None:
    client = OpenAI(base_url=trainer.base_url, api_key=trainer.key, max_retries=0)
    training = client.files.create(file=("t.jsonl", toy_chat_file(16)), purpose="fine-tune")
    job_id = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=training.id,
        method={"type": "supervised", "supervised": {"hyperparameters": FAST}},
    ).id

    def ended() -> str | None:
        status = client.fine_tuning.jobs.retrieve(job_id).status
        return status if status in TERMINAL else None

    assert wait_until(ended, 180, 0.2, "the job to end") == "succeeded"
    events = list(client.fine_tuning.jobs.list_events(job_id, limit=1000))
    admin = trainer.new_key("operators", scope="admin")
    found = samples(scrape(trainer.root_url, admin).text)

    assert value(found, "openft_jobs", status="succeeded") == 1
    assert value(found, "openft_jobs", status="failed") == 0
    assert value(found, "openft_jobs_queued") == 0
    assert value(found, "openft_queued_job_oldest_age_seconds") == 0
    assert value(found, "openft_worker_leases_held") == 0
    assert value(found, "openft_worker_leases_expired") == 0
    assert value(found, "openft_webhook_deliveries_pending") == 0
    # Every event of the job went through this process (the worker reports over HTTP).
    assert value(found, "openft_events_appended_total") == len(events)
    reports = {"method": "POST", "route": "/v1/worker/jobs/{job_id}/events"}
    assert value(found, "openft_http_request_duration_seconds_count", **reports) >= 1
    assert value(found, "openft_http_request_duration_seconds_bucket", le="+Inf", **reports) >= 1
