"""The web console in a real browser (Debian's Chromium driven by Playwright) against a
real server that really trains: sign-in, a finished job's curves (their data that of the
events' metrics, through openft's metrics endpoint), events and checkpoints, a running
job followed to its end without a reload, a reward chart, projects kept apart, files,
the job form and the playground."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI
from playwright.sync_api import Browser, Page, expect, sync_playwright

from openft.domain.entities import BaseModel, EventDraft, EventType, KeyScope
from openft.settings import Settings
from openft.store.database import sqlite_url
from openft.testing import queued_job
from openft.testing.data import toy_chat_file
from openft.testing.server import Server, running_server, wait_until
from openft.wiring import build_services

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


CHARTS = {
    "Training and validation loss": ["train_loss", "valid_loss", "full_valid_loss"],
    "Token accuracy": [
        "train_mean_token_accuracy",
        "valid_mean_token_accuracy",
        "full_valid_mean_token_accuracy",
    ],
    "Reward": ["train_mean_reward", "full_valid_mean_reward"],
}


def events_metrics(client: OpenAI, job_id: str, names: list[str]) -> dict[str, Any]:
    """Each metric's (step, value) columns, read from the job's events through the SDK:
    oldest first, each step once."""
    events = list(reversed(list(client.fine_tuning.jobs.list_events(job_id, limit=100))))
    columns: dict[str, Any] = {name: {"step": [], "value": []} for name in names}
    last = 0
    for event in events:
        data = event.data if isinstance(event.data, dict) else {}
        step = data.get("step")
        if event.type != "metrics" or not isinstance(step, int) or step <= last:
            continue
        last = step
        for name in names:
            if isinstance(data.get(name), int | float):
                columns[name]["step"].append(step)
                columns[name]["value"].append(data[name])
    return columns


def chart_data(page: Page, name: str) -> Any:
    """What the chart called `name` holds, read back from the page."""
    return page.get_by_role("img", name=name).evaluate("area => area.stepChart.snapshot()")


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
    # The curves: what the metrics endpoint had when the page opened, then the stream's.
    for name in ("Training and validation loss", "Token accuracy"):
        assert chart_data(page, name) == events_metrics(console.client, job, CHARTS[name])


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


def test_the_charts_data_equals_the_events_metrics(page: Page, console: Console) -> None:
    sign_in(page, console.url, console.server.key)
    page.goto(f"{console.url}/#/jobs/{console.finished}")
    for name in ("Training and validation loss", "Token accuracy"):
        expect(page.get_by_role("img", name=name).locator("canvas")).to_have_count(1)
        wanted = events_metrics(console.client, console.finished, CHARTS[name])
        assert wanted[CHARTS[name][0]]["step"] == list(range(1, 13))
        assert chart_data(page, name) == wanted
    assert chart_data(page, "Training and validation loss")["full_valid_loss"]["step"] == [12]
    # A supervised job without reward metrics has no reward chart.
    expect(page.get_by_role("img", name="Reward")).to_be_hidden()


def test_the_metrics_endpoint_answers_columns_and_refuses_bad_input(console: Console) -> None:
    url = f"{console.server.base_url}/fine_tuning/jobs/{console.finished}/metrics"
    auth = {"Authorization": f"Bearer {console.server.key}"}
    names = CHARTS["Training and validation loss"] + CHARTS["Token accuracy"]
    answer = httpx.get(url, params={"metrics": ",".join(names)}, headers=auth)
    assert answer.status_code == 200
    body = answer.json()
    assert body["object"] == "fine_tuning.job.metrics" and body["job_id"] == console.finished
    assert body["status"] == "succeeded" and body["downsampled"] is False
    assert body["metrics"] == events_metrics(console.client, console.finished, names)
    newest = console.client.fine_tuning.jobs.list_events(console.finished, limit=1).data[0]
    assert body["last_event_id"] == newest.id
    # Every numeric metric without `metrics`; downsampled with few points.
    everything = httpx.get(url, params={"max_points": 4}, headers=auth).json()
    assert {"train_loss", "learning_rate", "total_steps"} <= set(everything["metrics"])
    assert everything["downsampled"] is True
    assert len(everything["metrics"]["train_loss"]["step"]) <= 4
    for params, status, param in (
        ({"metrics": "train_loss,,valid_loss"}, 400, "metrics"),
        ({"max_points": 1}, 422, "max_points"),
        ({"max_points": "many"}, 422, "max_points"),
    ):
        refused = httpx.get(url, params=params, headers=auth)
        assert refused.status_code == status, refused.text
        assert refused.json()["error"]["param"] == param
    stranger = {"Authorization": f"Bearer {console.server.new_key('stranger')}"}
    hidden = httpx.get(url, headers=stranger)
    assert hidden.status_code == 404
    assert hidden.json()["error"]["code"] == "fine_tuning_job_not_found"


def test_a_reinforcement_jobs_rewards_are_charted(page: Page, console: Console) -> None:
    # Metrics events in OpenAI's RFT shape, written through the service layer as a
    # worker's reports would be (the job itself is cancelled: nothing trains).
    services = build_services(
        Settings(data_dir=console.server.data_dir, database_url=console.server.database_url),
        [BaseModel("tiny", "unused")],  # a name the job may name; nothing loads it
    )
    try:
        _key, record = services.keys.create("acme", KeyScope.PROJECT)  # the server key's project
        job = queued_job(services, record.principal)
        services.jobs.cancel(record.principal, job)
        rewards = [
            EventDraft(
                f"Step {step}/6, train mean reward={step / 10}",
                type=EventType.METRICS,
                data={
                    "step": step,
                    "total_steps": 6,
                    "train_mean_reward": step / 10,
                    "train_loss": 1 / step,
                    "scores": {"match": step / 10},
                    **({"full_valid_mean_reward": step / 8} if step % 3 == 0 else {}),
                },
            )
            for step in range(1, 7)
        ]
        services.events.append(job, rewards)
    finally:
        services.close()
    sign_in(page, console.url, console.server.key)
    page.goto(f"{console.url}/#/jobs/{job}")
    chart = page.get_by_role("img", name="Reward")
    expect(chart.locator("canvas")).to_have_count(1)
    expect(page.locator(".chart").filter(has=chart)).to_contain_text("full validation mean reward")
    assert chart_data(page, "Reward") == events_metrics(console.client, job, CHARTS["Reward"])
    assert chart_data(page, "Reward")["full_valid_mean_reward"]["step"] == [3, 6]


def test_the_playground_streams_three_models_side_by_side(page: Page, console: Console) -> None:
    job = console.client.fine_tuning.jobs.retrieve(console.finished)
    assert job.fine_tuned_model
    checkpoint = next(
        c.fine_tuned_model_checkpoint
        for c in console.client.fine_tuning.jobs.checkpoints.list(console.finished)
        if c.step_number == 8
    )
    sign_in(page, console.url, console.server.key)
    page.goto(f"{console.url}/#/jobs/{console.finished}")
    page.get_by_role("link", name="Try in playground").click()
    expect(page.get_by_role("heading", name="Playground")).to_be_visible()
    # The job's fine-tuned model and its base, preselected.
    expect(page.get_by_label("Model 1")).to_have_value(job.fine_tuned_model)
    expect(page.get_by_label("Model 2")).to_have_value("tiny")
    expect(page.get_by_label("Model 3")).to_have_value("")
    page.get_by_label("Model 3").select_option(checkpoint)
    # From here the keyboard alone: to the prompt, and Ctrl+Enter sends it.
    page.get_by_label("Model 3").focus()
    page.keyboard.press("Tab")
    expect(page.get_by_label("System message (optional)")).to_be_focused()
    page.keyboard.type("Answer briefly.")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Prompt")).to_be_focused()
    page.keyboard.type("Hello there")
    page.get_by_label("Temperature").fill("0")
    page.get_by_label("Max tokens").fill("12")
    page.get_by_label("Prompt").focus()
    page.keyboard.press("Control+Enter")
    models = [job.fine_tuned_model, "tiny", checkpoint]
    for model in models:
        region = page.get_by_role("region", name=model, exact=True)
        expect(region).to_have_attribute("aria-busy", "false", timeout=60_000)
        stats = region.locator(".answer-stats")
        expect(stats).to_contain_text("time to first token")
        expect(stats).to_contain_text("finished")
        assert int(stats.inner_text().split(" tokens")[0].split("· ")[-1]) > 0
        assert region.locator(".answer-text").inner_text().strip()
    expect(page.get_by_role("region")).to_have_count(3)
    # Stop ends every answer, streaming or not.
    page.get_by_label("Max tokens").fill("400")
    page.get_by_role("button", name="Send").click()
    page.get_by_role("button", name="Stop").click(force=True)  # (it may all have ended)
    for model in models:
        region = page.get_by_role("region", name=model, exact=True)
        expect(region).to_have_attribute("aria-busy", "false")
        expect(region.locator(".answer-stats")).to_contain_text(re.compile("stopped|finished"))
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()
