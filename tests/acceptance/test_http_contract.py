"""Wire-level contracts: error envelopes, request ids, and response bodies that validate
against OpenAI's published schemas and the Nebius seed's schema."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import yaml

from openft.testing.data import chat_file
from openft.testing.server import Server
from tests.acceptance.helpers import queued_job
from tests.schemas import CONTRACT, assert_valid


@pytest.fixture
def http(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {server.key}"})


def assert_envelope(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["x-request-id"]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert_valid("openai-fine-tuning.yaml", "ErrorResponse", response.json())
    return error  # type: ignore[no-any-return]


def test_missing_and_wrong_keys(server: Server) -> None:
    bare = httpx.Client(base_url=server.base_url)
    error = assert_envelope(bare.get("/fine_tuning/jobs"), 401)
    assert error["message"].startswith("You didn't provide an API key")
    error = assert_envelope(bare.get("/files", headers={"Authorization": "Bearer nope"}), 401)
    assert (
        error["message"].startswith("Incorrect API key provided")
        and error["code"] == "invalid_api_key"
    )
    assert httpx.get(server.base_url.removesuffix("/v1") + "/healthz").json() == {"status": "ok"}


def test_every_error_has_the_envelope_and_a_request_id(http: httpx.Client) -> None:
    assert_envelope(http.get("/fine_tuning/jobs/ftjob-x"), 404)
    assert_envelope(http.get("/files/file-x/content"), 404)
    assert_envelope(http.get("/no/such/route"), 404)
    assert_envelope(
        http.post(
            "/fine_tuning/jobs", content=b"{not json", headers={"content-type": "application/json"}
        ),
        422,
    )
    assert_envelope(http.delete("/fine_tuning/jobs"), 405)
    response = http.get("/fine_tuning/jobs", headers={"x-request-id": "trace-123"})
    assert response.headers["x-request-id"] == "trace-123"


def test_422_carries_openai_error_and_fastapi_detail(http: httpx.Client) -> None:
    job = http.get("/fine_tuning/jobs").json()
    assert job["object"] == "list"
    response = http.get("/fine_tuning/jobs/ftjob-x/events", params={"limit": 5000})
    error = assert_envelope(response, 422)
    assert error["param"] == "limit" and "less than or equal to 1000" in error["message"]
    detail = response.json()["detail"]
    assert detail[0]["loc"] == ["query", "limit"] and detail[0]["msg"] and detail[0]["type"]
    assert_valid("nebius-events.yaml", "HTTPValidationError", response.json())
    missing = http.post("/fine_tuning/jobs", json={"model": "tiny"})
    assert assert_envelope(missing, 422)["code"] == "missing_required_parameter"


def test_bodies_validate_against_openai_and_nebius_schemas(
    server: Server, http: httpx.Client
) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)
    job = queued_job(client, metadata={"k": "v"})
    failed = client.fine_tuning.jobs.create(
        model="tiny", training_file=job.training_file, method={"type": "dpo"}
    )

    upload = http.post(
        "/files", files={"file": ("t.jsonl", chat_file(12))}, data={"purpose": "fine-tune"}
    )
    assert_valid("openai-fine-tuning.yaml", "OpenAIFile", upload.json())
    assert_valid("openai-fine-tuning.yaml", "ListFilesResponse", http.get("/files").json())
    assert_valid(
        "openai-fine-tuning.yaml",
        "DeleteFileResponse",
        http.delete(f"/files/{upload.json()['id']}").json(),
    )
    for job_id in (job.id, failed.id):
        assert_valid(
            "openai-fine-tuning.yaml",
            "FineTuningJob",
            http.get(f"/fine_tuning/jobs/{job_id}").json(),
        )
    assert_valid(
        "openai-fine-tuning.yaml",
        "FineTuningJob",
        http.post(f"/fine_tuning/jobs/{job.id}/cancel").json(),
    )
    assert_valid(
        "openai-fine-tuning.yaml",
        "ListPaginatedFineTuningJobsResponse",
        http.get("/fine_tuning/jobs").json(),
    )
    events = http.get(f"/fine_tuning/jobs/{failed.id}/events", params={"limit": 100}).json()
    assert_valid("openai-fine-tuning.yaml", "ListFineTuningJobEventsResponse", events)
    assert_valid("nebius-events.yaml", "ListEventsResponse", events)
    assert {e["type"] for e in events["data"]} == {"message"}
    assert all(isinstance(e["data"], dict) for e in events["data"])
    assert {e["level"] for e in events["data"]} == {"info", "error"}


def test_openapi_documents_every_operation_and_the_nebius_events_parameters(server: Server) -> None:
    spec = httpx.get(server.base_url.removesuffix("/v1") + "/openapi.json").json()
    operations = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert {
        "createFile",
        "listFiles",
        "retrieveFile",
        "deleteFile",
        "downloadFile",
        "createFineTuningJob",
        "listPaginatedFineTuningJobs",
        "retrieveFineTuningJob",
        "cancelFineTuningJob",
        "pauseFineTuningJob",
        "resumeFineTuningJob",
        "listFineTuningEvents",
        "listModels",
        "retrieveModel",
    } <= operations
    events = spec["paths"]["/v1/fine_tuning/jobs/{fine_tuning_job_id}/events"]["get"]
    params = {p["name"]: p for p in events["parameters"]}
    nebius = yaml.safe_load((CONTRACT / "nebius-events.yaml").read_text())
    nebius_params = {
        p["name"]: p
        for p in nebius["paths"]["/v1/fine_tuning/jobs/{job_id}/events"]["get"]["parameters"]
    }
    for name in ("after", "limit"):
        assert not params[name]["required"] and not nebius_params[name]["required"]
        ours = {s.get("type") for s in params[name]["schema"]["anyOf"]}
        theirs = {s.get("type") for s in nebius_params[name]["schema"]["anyOf"]}
        assert ours == theirs
    assert set(events["responses"]) >= {"200", "422"}
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    event_schema = spec["components"]["schemas"]["FineTuningJobEvent"]
    assert set(event_schema["required"]) >= set(
        nebius["components"]["schemas"]["FineTuningJobEvent"]["required"]
    )


def test_a_nul_character_is_a_client_error_on_every_database(http: httpx.Client) -> None:
    # PostgreSQL's text cannot hold NUL: found by schemathesis as a 500, now a 400.
    error = assert_envelope(http.get("/fine_tuning/jobs", params={"metadata[k]": "a\0b"}), 400)
    assert "NUL" in error["message"]
    assert "NUL" in assert_envelope(http.get("/fine_tuning/jobs/ftjob-a%00b"), 400)["message"]
    body = {"model": "tiny", "training_file": "file-x", "metadata": {"k": "a\0b"}}
    assert "NUL" in assert_envelope(http.post("/fine_tuning/jobs", json=body), 422)["message"]


def test_a_wrong_method_is_405_with_allow(http: httpx.Client) -> None:
    response = http.put("/fine_tuning/jobs")
    assert_envelope(response, 405)
    assert set(response.headers["allow"].split(", ")) >= {"GET", "POST"}


def test_a_request_body_over_the_limit_is_413_before_it_is_read_whole(
    http: httpx.Client,
) -> None:
    prompt = "x" * (9 * 1024 * 1024)  # the default limit is 8 MiB
    body = {"model": "tiny", "messages": [{"role": "user", "content": prompt}]}
    error = assert_envelope(http.post("/chat/completions", json=body), 413)
    assert error["code"] == "request_too_large" and "8388608 bytes" in error["message"]

    def chunked() -> Any:  # no Content-Length: counted as it arrives
        yield b'{"model": "tiny", "messages": [{"role": "user", "content": "'
        for _ in range(9):
            yield b"x" * (1024 * 1024)
        yield b'"}]}'

    streamed = http.post(
        "/fine_tuning/jobs", content=chunked(), headers={"Content-Type": "application/json"}
    )
    assert assert_envelope(streamed, 413)["code"] == "request_too_large"
