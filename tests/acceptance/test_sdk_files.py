"""The Files API through the official SDK, sync and async."""

from __future__ import annotations

import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from openft.testing.data import chat_file, preference_file


def test_upload_list_retrieve_download_delete(client: OpenAI) -> None:
    data = chat_file(12)
    created = client.files.create(file=("train.jsonl", data), purpose="fine-tune")
    assert created.id.startswith("file-") and created.bytes == len(data)
    assert (created.filename, created.purpose, created.object) == (
        "train.jsonl",
        "fine-tune",
        "file",
    )
    assert client.files.retrieve(created.id) == created
    assert created.id in [f.id for f in client.files.list(purpose="fine-tune")]
    assert client.files.content(created.id).read() == data
    deleted = client.files.delete(created.id)
    assert deleted.deleted and deleted.id == created.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)


def test_list_pages_with_after_and_order(client: OpenAI) -> None:
    ids = [
        client.files.create(file=(f"p{i}.jsonl", preference_file(2)), purpose="fine-tune").id
        for i in range(3)
    ]
    asc = [f.id for f in client.files.list(order="asc", limit=1)]  # auto-pagination, one per page
    assert [i for i in asc if i in ids] == ids
    page = client.files.list(order="desc", limit=2)
    assert page.has_more and len(page.data) == 2


def test_bad_uploads_are_400_and_store_nothing(client: OpenAI) -> None:
    before = [f.id for f in client.files.list()]
    with pytest.raises(openai.BadRequestError, match="line 2: not valid JSON"):
        client.files.create(file=("bad.jsonl", chat_file(1) + b"{nope\n"), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError, match=r"Must be \.jsonl"):
        client.files.create(file=("bad.txt", chat_file(1)), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as raised:
        client.files.create(file=("x.jsonl", chat_file(1)), purpose="wrong")  # type: ignore[arg-type]
    assert raised.value.body["param"] == "purpose"  # type: ignore[index]
    assert [f.id for f in client.files.list()] == before


def test_unknown_files_are_404(client: OpenAI) -> None:
    for call in (client.files.retrieve, client.files.delete, client.files.content):
        with pytest.raises(openai.NotFoundError, match="No such File object: file-nope"):
            call("file-nope")


async def test_async_client(async_client: AsyncOpenAI) -> None:
    created = await async_client.files.create(file=("a.jsonl", chat_file(3)), purpose="fine-tune")
    assert (await async_client.files.retrieve(created.id)).bytes == created.bytes
    assert (await async_client.files.content(created.id)).read() == chat_file(3)
    assert (await async_client.files.delete(created.id)).deleted
