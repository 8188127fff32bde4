"""The worker protocol over HTTP: who may use it, and what bad calls get."""

from __future__ import annotations

import io
import json
import tarfile

import httpx
from openai import OpenAI

from openft.testing.server import Server
from tests.acceptance.helpers import upload_chat, wait_for_status


def worker_http(server: Server, key: str, worker_id: str = "w-test") -> httpx.Client:
    return httpx.Client(
        base_url=f"{server.base_url}/worker",
        headers={"Authorization": f"Bearer {key}", "OpenFT-Worker": worker_id},
    )


def archive_of(*members: tuple[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def bomb() -> bytes:
    """About 100 KB that would unpack to 200 MB of zeros."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 200 << 20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    return out.getvalue()


def test_project_keys_cannot_use_the_worker_protocol(server: Server) -> None:
    response = worker_http(server, server.key).post("/claim", json={"worker_id": "x"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_permissions"


def test_claim_report_and_lease_errors(server: Server, client: OpenAI) -> None:
    key = server.new_key("workers", scope="worker")
    worker = worker_http(server, key)
    # Drain what other tests left queued, so this test's job is the one claimed.
    while worker.post("/claim", json={"worker_id": "drain"}).status_code == 200:
        pass
    assert worker.post("/claim", json={"worker_id": "w-test"}).status_code == 204
    job = client.fine_tuning.jobs.create(model="tiny", training_file=upload_chat(client))
    wait_for_status(client, job.id, "queued")
    claimed = worker.post("/claim", json={"worker_id": "w-test"})
    assert claimed.status_code == 200 and claimed.json()["job"]["id"] == job.id
    assert claimed.json()["job"]["hyperparameters"]["n_epochs"] == 9  # 12 examples: ceil(100/12)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"

    bad_meta = worker.post(
        f"/jobs/{job.id}/checkpoints",
        data={"meta": '{"step": 0}'},
        files={"archive": ("a.tar.gz", b"x")},
    )
    assert bad_meta.status_code == 400 and bad_meta.json()["error"]["param"] == "meta"
    # Archives are checked as they arrive: a bomb, an escape, or no tar.gz at all is a
    # 400 naming the member, and nothing is stored.
    for archive, says in (
        (bomb(), "unpacks to more than"),
        (archive_of(("../escaped", b"x")), "'../escaped' points outside"),
        (b"not a tar.gz", "not a readable tar.gz"),
    ):
        refused = worker.post(
            f"/jobs/{job.id}/checkpoints",
            data={"meta": '{"step": 1}'},
            files={"archive": ("a.tar.gz", archive)},
        )
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == "archive" and says in refused.text
    assert client.fine_tuning.jobs.checkpoints.list(job.id).data == []
    # Integers past 64 bits are refused as bad input, never met later as a 500.
    for path, body in (
        ("events", {"batch": 2**63, "events": []}),
        ("events", {"batch": 1, "events": [{"message": "m", "data": {"step": 2**63}}]}),
        ("events", {"batch": 1, "events": [{"message": "m", "data": {"x": [-(2**63) - 1]}}]}),
        ("heartbeat", {"trained_tokens": 2**64}),
    ):
        refused = worker.post(f"/jobs/{job.id}/{path}", json=body)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["type"] == "invalid_request_error"
    batch = {"batch": 1, "events": [{"message": "hello from a worker"}]}
    assert worker.post(f"/jobs/{job.id}/events", json=batch).json() == {"applied": True}
    assert worker.post(f"/jobs/{job.id}/events", json=batch).json() == {"applied": False}
    assert (
        client.fine_tuning.jobs.list_events(job.id, limit=1).data[0].message
        == "hello from a worker"
    )

    # Another worker key that copies this worker's name (the job's events show it)
    # holds nothing: a key acts only as the workers it started.
    impostor = worker_http(server, server.new_key("workers", scope="worker"), "w-test")
    for call in ("heartbeat", "events", "stopped"):
        body = {"batch": 9, "events": [{"message": "forged"}]} if call == "events" else {}
        forged = impostor.post(f"/jobs/{job.id}/{call}", json=body)
        assert forged.status_code == 409 and forged.json()["error"]["code"] == "lease_lost"
    assert "forged" not in [e.message for e in client.fine_tuning.jobs.list_events(job.id)]
    other = worker_http(server, key, "someone-else")
    lost = other.post(f"/jobs/{job.id}/heartbeat", json={})
    assert lost.status_code == 409 and lost.json()["error"]["code"] == "lease_lost"
    assert other.get(f"/jobs/{job.id}/files/{job.training_file}").status_code == 409
    assert worker.get(f"/jobs/{job.id}/files/file-other").status_code == 404

    client.fine_tuning.jobs.cancel(job.id)
    assert worker.post(f"/jobs/{job.id}/heartbeat", json={}).json() == {"control": "cancel"}
    assert worker.post(f"/jobs/{job.id}/stopped").json()["status"] == "cancelled"
    assert worker.post(f"/jobs/{job.id}/heartbeat", json={}).status_code == 409


def test_a_report_is_answered_the_same_whoever_answers_it(server: Server, client: OpenAI) -> None:
    """A plain report from a verified worker key is applied before routing
    (api/worker_reports.py); what that does not take (a query, another content type, a
    body it does not accept) and every refusal go to the route: the same answers, the
    same events, counted under the route's template."""
    key = server.new_key("workers", scope="worker")
    worker = worker_http(server, key, "w-same")
    while worker.post("/claim", json={"worker_id": "drain"}).status_code == 200:
        pass  # what other tests left queued
    job = client.fine_tuning.jobs.create(model="tiny", training_file=upload_chat(client))
    wait_for_status(client, job.id, "queued")
    assert worker.post("/claim", json={"worker_id": "w-same"}).json()["job"]["id"] == job.id
    url = f"/jobs/{job.id}/events"

    def report(batch: int, **options: str) -> httpx.Response:
        body = {"batch": batch, "events": [{"message": f"report {batch}"}]}
        headers = {"Content-Type": options.pop("content_type", "application/json")}
        return worker.post(url, content=json.dumps(body), headers=headers, params=options)

    answers = [
        report(1),  # before routing
        report(1),  # the same batch again: not applied twice
        report(2, q="1"),  # a query: the route
        report(3, content_type="application/json; charset=utf-8"),  # the route
        report(4),
    ]
    assert [a.content for a in answers] == [
        b'{"applied":true}',
        b'{"applied":false}',
        b'{"applied":true}',
        b'{"applied":true}',
        b'{"applied":true}',
    ]
    assert all(a.headers["content-type"] == "application/json" for a in answers)
    assert all(a.headers["x-request-id"] for a in answers)
    # Refusals are the route's, in OpenAI's envelope, and write nothing.
    bad = worker.post(url, json={"batch": 0, "events": []})
    assert bad.status_code == 422 and bad.json()["error"]["type"] == "invalid_request_error"
    lost = worker_http(server, key, "w-other").post(url, json={"batch": 5, "events": []})
    assert lost.status_code == 409 and lost.json()["error"]["code"] == "lease_lost"
    gone = worker.post("/jobs/ftjob-none/events", json={"batch": 1, "events": []})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "fine_tuning_job_not_found"
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    reports = [m for m in reversed(messages) if m.startswith("report ")]
    assert reports == ["report 1", "report 2", "report 3", "report 4"]
    admin = server.new_key("ops", scope="admin")
    scraped = httpx.get(f"{server.root_url}/metrics", headers={"Authorization": f"Bearer {admin}"})
    template = "/v1/worker/jobs/{job_id}/events"
    assert f'openft_http_requests_total{{method="POST",route="{template}",status="200"}}' in (
        scraped.text
    )
