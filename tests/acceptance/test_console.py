"""The web console in a real browser (Debian's Chromium driven by Playwright) against a
real server that really trains: sign-in, a finished job's curves, events and
checkpoints, a running job followed to its end without a reload, projects kept apart,
files and the job form."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI
from playwright.sync_api import Browser, Page, expect, sync_playwright

from openft.store.database import sqlite_url
from openft.testing.data import toy_chat_file
from openft.testing.server import Server, running_server, wait_until

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("OPENFT_CHROMIUM", "/usr/bin/chromium")
FAST: Any = {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 100}
SLOWER: Any = {"n_epochs": 12, "batch_size": 4, "learning_rate_multiplier": 100}


@dataclass
class Console:
    server: Server
    client: OpenAI
    finished: str  # a job that has succeeded, with a validation file

    @property
    def url(self) -> str:
        return self.server.root_url


def train(client: OpenAI, hyperparameters: Any, validation: bool = False) -> str:
    upload = client.files.create(file=("train.jsonl", toy_chat_file(16)), purpose="fine-tune")
    valid = (
        client.files.create(file=("valid.jsonl", toy_chat_file(4)), purpose="fine-tune").id
        if validation
        else None
    )
    return client.fine_tuning.jobs.create(
        model="tiny",
        training_file=upload.id,
        validation_file=valid,
        hyperparameters=hyperparameters,
    ).id


def finished(client: OpenAI, job_id: str) -> None:
    def done() -> bool:
        return client.fine_tuning.jobs.retrieve(job_id).status == "succeeded"

    wait_until(done, 300, 0.5, f"job {job_id} to succeed")


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Console]:
    data_dir = tmp_path_factory.mktemp("console")
    env = {"OPENFT_CHECKPOINT_EVERY": "4", "OPENFT_HEARTBEAT_SECONDS": "1"}
    with running_server(
        sqlite_url(data_dir), data_dir, f"tiny={tiny_model}", worker=True, env=env
    ) as server:
        client = OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)
        job = train(client, FAST, validation=True)
        finished(client, job)
        yield Console(server, client, job)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    yield page
    context.close()


def sign_in(page: Page, url: str, key: str) -> None:
    page.goto(url)
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def test_sign_in_shows_the_jobs_and_sign_out_forgets_the_key(page: Page, console: Console) -> None:
    sign_in(page, console.url, console.server.key)
    table = page.get_by_role("table", name="Fine-tuning jobs")
    row = table.get_by_role("row").filter(has_text=console.finished)
    expect(row).to_contain_text("succeeded")
    expect(row).to_contain_text("12/12")  # progress: the last step of 3 epochs of 4
    expect(row.get_by_role("link", name=console.finished)).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('openft.apiKey')") == console.server.key
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('openft.apiKey')") is None


def test_the_keyboard_alone_signs_in_and_opens_a_job(page: Page, console: Console) -> None:
    page.goto(console.url)
    expect(page.get_by_label("API key")).to_be_focused()  # the page starts where one types
    page.keyboard.type(console.server.key)
    page.keyboard.press("Enter")
    link = page.get_by_role("link", name=console.finished)
    expect(link).to_be_visible()
    link.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("img", name="Training and validation loss")).to_be_visible()


def test_a_wrong_key_gets_a_clear_message(page: Page, console: Console) -> None:
    sign_in(page, console.url, "sk-openft-not-a-real-key")
    expect(page.get_by_role("alert")).to_contain_text("Invalid API key")
    expect(page.get_by_role("table")).to_have_count(0)


def test_a_finished_job_shows_its_curves_completion_and_checkpoints(
    page: Page, console: Console
) -> None:
    sign_in(page, console.url, console.server.key)
    page.goto(f"{console.url}/#/jobs/{console.finished}")
    chart = page.get_by_role("img", name="Training and validation loss")
    expect(chart.locator("canvas")).to_have_count(1)
    expect(page.get_by_role("img", name="Token accuracy").locator("canvas")).to_have_count(1)
    # The legend names every series the metrics carry, validation included.
    expect(page.locator(".chart").first).to_contain_text("validation loss")
    events = page.get_by_role("list", name="Events, newest first")
    expect(events.locator("li").first).to_contain_text("The job has successfully completed")
    checkpoints = page.get_by_role("table", name="Checkpoints")
    expect(checkpoints).to_contain_text(f":{console.finished}:ckpt-step-12")
    expect(checkpoints.get_by_role("row")).to_have_count(4)  # a header and 3 checkpoints
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)  # it has ended
    with page.expect_download() as download:
        page.get_by_role("button", name="Download results file").click()
    assert download.value.suggested_filename == "step_metrics.csv"


def test_load_older_events_pages_back_to_the_first_event(page: Page, console: Console) -> None:
    total = len(list(console.client.fine_tuning.jobs.list_events(console.finished, limit=100)))
    assert total > 20
    sign_in(page, console.url, console.server.key)
    page.goto(f"{console.url}/#/jobs/{console.finished}")
    items = page.get_by_role("list", name="Events, newest first").locator("li")
    expect(items).to_have_count(20)
    older = page.get_by_role("button", name="Load older events")
    while older.is_visible():
        shown = items.count()
        older.click()
        expect(items).not_to_have_count(shown)
    expect(items).to_have_count(total)
    expect(items.last).to_contain_text(f"Created fine-tuning job: {console.finished}")


def test_a_running_job_page_follows_it_to_its_end_without_a_reload(
    page: Page, console: Console
) -> None:
    sign_in(page, console.url, console.server.key)
    job = train(console.client, SLOWER)
    page.goto(f"{console.url}/#/jobs/{job}")
    expect(page.get_by_role("button", name="Cancel")).to_be_visible()
    page.evaluate("window.notReloaded = true")
    events = page.get_by_role("list", name="Events, newest first")
    expect(events.locator("li").first).to_contain_text(
        "The job has successfully completed", timeout=240_000
    )
    expect(page.locator("h1 .status")).to_have_text("succeeded")
    expect(page.get_by_role("table", name="Checkpoints")).to_contain_text("ckpt-step-48")
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    expect(
        page.get_by_role("img", name="Training and validation loss").locator("canvas")
    ).to_have_count(1)
    assert page.evaluate("window.notReloaded") is True
    # Each event is listed once: those of the first page, then the new ones on top.
    ids = events.locator("li").evaluate_all("items => items.map(item => item.dataset.event)")
    assert len(ids) == len(set(ids))


def test_another_projects_key_does_not_see_the_job(page: Page, console: Console) -> None:
    sign_in(page, console.url, console.server.new_key("someone-else"))
    expect(page.get_by_text("No jobs yet.")).to_be_visible()
    page.goto(f"{console.url}/#/jobs/{console.finished}")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text(console.finished)


def test_files_upload_validate_and_delete(page: Page, console: Console, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_bytes(toy_chat_file(12))
    bad.write_bytes(toy_chat_file(12) + b"{not json\n")
    sign_in(page, console.url, console.server.key)
    page.get_by_role("link", name="Files").click()
    page.get_by_label("JSONL file").set_input_files(str(bad))
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_role("alert")).to_contain_text("line 13")
    page.get_by_label("JSONL file").set_input_files(str(good))
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_text("Uploaded good.jsonl")).to_be_visible()
    row = page.get_by_role("row").filter(has_text="good.jsonl")
    expect(row).to_have_count(1)
    row.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("row").filter(has_text="good.jsonl")).to_have_count(0)


def test_a_job_is_created_from_the_form(page: Page, console: Console) -> None:
    training = console.client.files.create(
        file=("form.jsonl", toy_chat_file(12)), purpose="fine-tune"
    ).id
    sign_in(page, console.url, console.server.key)
    page.get_by_role("link", name="New job").click()
    page.get_by_label("Base model").select_option("tiny")
    page.get_by_label("Training file").select_option(training)
    page.get_by_label("Epochs").fill("1")
    page.get_by_label("Suffix").fill("from-console")
    page.get_by_role("button", name="Create job").click()
    title = page.locator("#view h1")
    expect(title).to_contain_text("ftjob-")
    job_id = title.inner_text().split()[0]
    created = console.client.fine_tuning.jobs.retrieve(job_id)
    assert getattr(created, "user_provided_suffix", None) == "from-console"
    assert created.method is not None and created.method.type == "supervised"
    assert created.training_file == training
    supervised = created.method.supervised
    assert supervised and supervised.hyperparameters and supervised.hyperparameters.n_epochs == 1
    console.client.fine_tuning.jobs.cancel(job_id)  # it may be running: wait for the stop

    def cancelled() -> bool:
        return console.client.fine_tuning.jobs.retrieve(job_id).status == "cancelled"

    wait_until(cancelled, 60, 0.5, f"{job_id} to be cancelled")
