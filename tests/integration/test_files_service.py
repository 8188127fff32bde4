"""Files through the service layer: streamed, validated, limited, never half-stored."""

from __future__ import annotations

from pathlib import Path

import pytest

from openft.domain.entities import FileFormat, Principal
from openft.domain.errors import BlobMissing, InvalidFile, InvalidRequest, PayloadTooLarge
from openft.services.container import Services
from openft.services.files import FileService
from openft.services.jobs import NewJob
from openft.store.local_blobs import LocalBlobs
from openft.testing.data import chat_file


def blobs(directory: Path) -> list[str]:
    """What is in a blob directory (which exists once a first blob has been written)."""
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_upload_is_stored_hashed_and_described(
    services: Services, principal: Principal, tmp_path: Path
) -> None:
    data = chat_file(12)
    record = services.files.upload(principal, "train.jsonl", "fine-tune", [data[:100], data[100:]])
    assert (record.bytes, record.format, record.examples) == (len(data), FileFormat.CHAT, 12)
    assert b"".join(services.files.blob(record.id).chunks) == data
    assert services.files.get(principal, record.id) == record


def test_invalid_uploads_leave_nothing_behind(
    services: Services, principal: Principal, tmp_path: Path
) -> None:
    files_dir = tmp_path / "files"
    before = blobs(files_dir)
    with pytest.raises(InvalidFile, match="line 13"):
        services.files.upload(principal, "train.jsonl", "fine-tune", [chat_file(12), b"{oops\n"])
    with pytest.raises(InvalidFile, match=r"Must be \.jsonl"):
        services.files.upload(principal, "train.csv", "fine-tune", [chat_file()])
    with pytest.raises(InvalidRequest) as raised:
        services.files.upload(principal, "train.jsonl", "fine-tune-results", [chat_file()])
    assert raised.value.param == "purpose"
    assert blobs(files_dir) == before
    assert services.files.list(principal).items == []


def test_size_limit_is_enforced_while_streaming(
    services: Services, principal: Principal, tmp_path: Path
) -> None:
    small = FileService(services.db, LocalBlobs(tmp_path / "small"), max_bytes=1000)
    with pytest.raises(PayloadTooLarge):
        small.upload(principal, "train.jsonl", "fine-tune", [chat_file(12)])
    assert blobs(tmp_path / "small" / "files") == []
    with pytest.raises(PayloadTooLarge):
        small.check_request_size(1000 + 65 * 1024)


def test_files_in_use_by_an_active_job_cannot_be_deleted(
    services: Services, principal: Principal
) -> None:
    train = services.files.upload(principal, "train.jsonl", "fine-tune", [chat_file()]).id
    job = services.jobs.create(principal, NewJob(model="tiny", training_file=train))
    with pytest.raises(InvalidRequest, match="in use"):
        services.files.delete(principal, train)
    services.jobs.cancel(principal, job.id)
    services.files.delete(principal, train)
    with pytest.raises(BlobMissing):
        services.files.blob(train)


def test_list_orders_filters_and_pages(services: Services, principal: Principal) -> None:
    ids = [
        services.files.upload(principal, f"f{i}.jsonl", "fine-tune", [chat_file(2)]).id
        for i in range(3)
    ]
    other = services.files.upload(principal, "notes.txt", "user_data", [b"hello"]).id
    assert [f.id for f in services.files.list(principal).items] == [other, *ids[::-1]]
    assert [
        f.id for f in services.files.list(principal, purpose="fine-tune", newest_first=False).items
    ] == ids
    page = services.files.list(principal, limit=2, newest_first=False)
    assert [f.id for f in page.items] == ids[:2] and page.has_more
    rest = services.files.list(principal, after=ids[1], newest_first=False)
    assert [f.id for f in rest.items] == [ids[2], other] and not rest.has_more
