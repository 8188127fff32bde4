"""`openft files|jobs|events`: the user's commands, an HTTP client of a server's public
API (see `cli/client.py` for where it points and with which key)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from openft.cli.client import ApiError, Client

files_app = typer.Typer(help="Files on the server.", no_args_is_help=True)
jobs_app = typer.Typer(help="Fine-tuning jobs on the server.", no_args_is_help=True)
TERMINAL = ("succeeded", "failed", "cancelled")
out = Console()
err = Console(stderr=True)

BaseUrl = Annotated[
    str | None,
    typer.Option(help="The server, e.g. http://host:8000/v1 [env OPENFT_BASE_URL]."),
]
ApiKey = Annotated[str | None, typer.Option(help="An API key [env OPENFT_API_KEY].")]


@contextmanager
def _client(url: str | None, key: str | None) -> Iterator[Client]:
    """A client; any error from the server ends the command as one line, exit code 1."""
    try:
        client = Client(url, key)
        try:
            yield client
        finally:
            client.close()
    except ApiError as exc:
        err.print(f"openft: {exc}", markup=False, highlight=False)
        raise typer.Exit(code=1) from None


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A table on a terminal; tab-separated lines, never cut, for a script."""
    cells = [["" if row.get(c) is None else str(row[c]) for c in columns] for row in rows]
    if not out.is_terminal:
        for line in [columns, *cells]:
            print("\t".join(line))
        return
    table = Table(*columns, box=None, pad_edge=False)
    for line in cells:
        table.add_row(*line)
    out.print(table)


def _upload(client: Client, path: Path, purpose: str) -> dict[str, Any]:
    with open(path, "rb") as handle:
        uploaded: dict[str, Any] = client.request(
            "POST", "/files", files={"file": (path.name, handle)}, data={"purpose": purpose}
        )
    return uploaded


# -- files -----------------------------------------------------------------------------


@files_app.command("upload")
def files_upload(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A JSONL file.")],
    purpose: Annotated[str, typer.Option(help="The file's purpose.")] = "fine-tune",
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Upload a file (validated by the server) and print its id."""
    with _client(base_url, api_key) as client:
        uploaded = _upload(client, path, purpose)
    err.print(f"uploaded {path.name}: {uploaded['bytes']} bytes", highlight=False)
    print(uploaded["id"])


@files_app.command("list")
def files_list(base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """The project's files, newest first."""
    with _client(base_url, api_key) as client:
        rows = list(client.pages("/files"))
    _table(rows, ["id", "filename", "bytes", "purpose", "created_at"])


# -- jobs ------------------------------------------------------------------------------


@jobs_app.command("create")
def jobs_create(
    model: Annotated[str, typer.Option(help="A base model the server offers.")],
    training_file: Annotated[
        str, typer.Option(help="A file id, or a local JSONL path to upload first.")
    ],
    validation_file: Annotated[
        str | None, typer.Option(help="A file id, or a local JSONL path.")
    ] = None,
    method: Annotated[str, typer.Option(help="supervised, dpo or reinforcement.")] = "supervised",
    n_epochs: Annotated[int | None, typer.Option(help="Epochs (default: auto).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default: auto).")] = None,
    learning_rate_multiplier: Annotated[
        float | None, typer.Option(help="Learning-rate multiplier (default: auto).")
    ] = None,
    grader: Annotated[
        Path | None,
        typer.Option(help="reinforcement: a JSON file holding the grader (OpenAI's shape)."),
    ] = None,
    compute_multiplier: Annotated[
        float | None, typer.Option(help="reinforcement: completions per prompt, times 4.")
    ] = None,
    eval_interval: Annotated[
        int | None, typer.Option(help="reinforcement: steps between evaluations.")
    ] = None,
    eval_samples: Annotated[
        int | None, typer.Option(help="reinforcement: completions per validation prompt.")
    ] = None,
    suffix: Annotated[str | None, typer.Option(help="Part of the fine-tuned model's name.")] = None,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Create a fine-tuning job and print its id."""
    hyperparameters = {
        name: value
        for name, value in (
            ("n_epochs", n_epochs),
            ("batch_size", batch_size),
            ("learning_rate_multiplier", learning_rate_multiplier),
            ("compute_multiplier", compute_multiplier),
            ("eval_interval", eval_interval),
            ("eval_samples", eval_samples),
        )
        if value is not None
    }
    section: dict[str, Any] = {"hyperparameters": hyperparameters}
    if grader is not None:
        try:
            section["grader"] = json.loads(grader.read_text())
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(
                f"cannot read {grader}: {exc}", param_hint="--grader"
            ) from None
    with _client(base_url, api_key) as client:

        def file_id(value: str) -> str:
            path = Path(value)
            if not path.is_file():
                return value
            uploaded = _upload(client, path, "fine-tune")
            err.print(f"uploaded {path.name}: {uploaded['id']}", highlight=False)
            return str(uploaded["id"])

        body: dict[str, Any] = {
            "model": model,
            "training_file": file_id(training_file),
            "method": {"type": method, method: section},
        }
        if validation_file is not None:
            body["validation_file"] = file_id(validation_file)
        if suffix is not None:
            body["suffix"] = suffix
        job = client.request("POST", "/fine_tuning/jobs", json=body)
    print(job["id"])


@jobs_app.command("list")
def jobs_list(base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """The project's jobs, newest first."""
    with _client(base_url, api_key) as client:
        rows = list(client.pages("/fine_tuning/jobs"))
    _table(rows, ["id", "model", "status", "created_at", "fine_tuned_model"])


@jobs_app.command("get")
def jobs_get(job_id: str, base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """A job, as JSON."""
    with _client(base_url, api_key) as client:
        print(json.dumps(client.request("GET", f"/fine_tuning/jobs/{job_id}"), indent=2))


def _control(action: str) -> Callable[..., None]:
    def command(job_id: str, base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
        with _client(base_url, api_key) as client:
            job = client.request("POST", f"/fine_tuning/jobs/{job_id}/{action}")
        print(f"{job['id']} {job['status']}")

    command.__doc__ = f"{action.capitalize()} a job (a running one at its next step)."
    return command


for _action in ("cancel", "pause", "resume"):
    jobs_app.command(_action)(_control(_action))


@jobs_app.command("wait")
def jobs_wait(
    job_id: str,
    quiet: Annotated[bool, typer.Option(help="Print only the outcome.")] = False,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Follow a job to its end; exit 0 if it succeeded, 1 otherwise."""
    with _client(base_url, api_key) as client:
        _show(client.follow(job_id), quiet=quiet, as_json=False)
        job = client.request("GET", f"/fine_tuning/jobs/{job_id}")
    _outcome(job)


def events(
    job_id: str,
    follow: Annotated[bool, typer.Option(help="Go on as events arrive, to the job's end.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One event per line, as the API sends it.")
    ] = False,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """A job's events, oldest first; with --follow, live, to the job's end."""
    with _client(base_url, api_key) as client:
        if follow:
            _show(client.follow(job_id), quiet=False, as_json=as_json)
            return
        listed = list(client.pages(f"/fine_tuning/jobs/{job_id}/events"))
        _show(iter(reversed(listed)), quiet=False, as_json=as_json)


def step_figures(data: dict[str, Any]) -> str:
    """A metrics event's figures for the progress bar: a reinforcement job's mean rewards,
    any other job's losses (each with the validation figure when the step has one)."""
    if "train_mean_reward" in data:
        figures = f"reward {data['train_mean_reward']:.3f}"
        if "full_valid_mean_reward" in data:
            figures += f", valid {data['full_valid_mean_reward']:.3f}"
        return figures
    figures = f"loss {data.get('train_loss', 0):.3f}"
    if "valid_loss" in data:
        figures += f", valid {data['valid_loss']:.3f}"
    return figures


def _show(stream: Iterator[dict[str, Any]], *, quiet: bool, as_json: bool) -> None:
    """Print events as they come: status messages as lines, metrics as a progress bar
    with the step, the latest losses or rewards and the time left (as lines when not a
    terminal)."""
    if as_json:
        for event in stream:
            print(json.dumps(event), flush=True)
        return
    bar = out.is_terminal and not quiet
    progress = Progress(
        TextColumn("[bold]training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[losses]}"),
        TimeRemainingColumn(),
        console=out,
        disable=not bar,
    )
    task = progress.add_task("train", total=None, losses="")
    with progress:
        for event in stream:
            data = event.get("data") or {}
            if event["type"] == "metrics" and bar:
                progress.update(
                    task,
                    completed=data.get("step"),
                    total=data.get("total_steps"),
                    losses=step_figures(data),
                )
            elif not quiet:
                level = "" if event["level"] == "info" else f"{event['level']}: "
                progress.console.print(
                    f"{level}{event['message']}", markup=False, highlight=False, soft_wrap=True
                )


def _outcome(job: dict[str, Any]) -> None:
    if job["status"] == "succeeded":
        print(f"succeeded: {job['fine_tuned_model']}")
        return
    error = job.get("error") or {}
    detail = f": {error['message']}" if error.get("message") else ""
    print(f"{job['status']}{detail}", file=sys.stderr)
    raise typer.Exit(code=1)


# -- webhooks --------------------------------------------------------------------------

webhooks_app = typer.Typer(help="Webhook endpoints of your project.", no_args_is_help=True)


@webhooks_app.command("add")
def webhooks_add(
    url: Annotated[str, typer.Argument(help="The http(s) URL to post events to.")],
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Add an endpoint: terminal transitions of your jobs are posted to it, signed.
    Prints its id and its signing secret (whsec_…) for the receiver: shown this once."""
    with _client(base_url, api_key) as client:
        endpoint = client.request("POST", "/webhooks", json={"url": url})
    print(f"{endpoint['id']}\t{endpoint['secret']}")


@webhooks_app.command("list")
def webhooks_list(base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """Your project's endpoints."""
    with _client(base_url, api_key) as client:
        rows = client.request("GET", "/webhooks")["data"]
    _table(rows, ["id", "url", "created_at"])


@webhooks_app.command("remove")
def webhooks_remove(webhook_id: str, base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """Remove an endpoint (and its pending deliveries)."""
    with _client(base_url, api_key) as client:
        client.request("DELETE", f"/webhooks/{webhook_id}")
    print(f"{webhook_id} removed")


@webhooks_app.command("deliveries")
def webhooks_deliveries(webhook_id: str, base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """An endpoint's latest deliveries, newest first, with their attempts."""
    with _client(base_url, api_key) as client:
        rows = client.request("GET", f"/webhooks/{webhook_id}/deliveries")["data"]
    _table(rows, ["id", "type", "job_id", "attempts", "delivered_at", "last_status", "last_error"])


# -- checkpoint permissions (an admin key's) ---------------------------------------------

checkpoints_app = typer.Typer(
    help="Share a fine-tuned model or checkpoint with other projects (an admin key:"
    " `openft keys create --scope admin`).",
    no_args_is_help=True,
)
CheckpointName = Annotated[
    str,
    typer.Argument(help="The checkpoint's model name (ft:…:ckpt-step-N) or a fine-tuned model."),
]


def _permissions_path(checkpoint: str) -> str:
    # Percent-encoded as the SDKs send it: a base model's name may hold a slash.
    return f"/fine_tuning/checkpoints/{quote(checkpoint, safe=':')}/permissions"


@checkpoints_app.command("share")
def checkpoints_share(
    checkpoint: CheckpointName,
    project: Annotated[
        list[str], typer.Option(help="A project id (proj_…) to grant; repeat for several.")
    ],
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Let projects list the model and chat with it. Prints each permission's id."""
    with _client(base_url, api_key) as client:
        granted = client.request(
            "POST", _permissions_path(checkpoint), json={"project_ids": project}
        )
    _table(granted["data"], ["id", "project_id", "created_at"])


@checkpoints_app.command("unshare")
def checkpoints_unshare(
    checkpoint: CheckpointName,
    permission_id: Annotated[str, typer.Argument(help="The permission's id (cp_…).")],
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Withdraw a permission: the project's next call on the model is a 404."""
    with _client(base_url, api_key) as client:
        client.request("DELETE", f"{_permissions_path(checkpoint)}/{permission_id}")
    print(f"{permission_id} deleted")


@checkpoints_app.command("permissions")
def checkpoints_permissions(
    checkpoint: CheckpointName,
    project: Annotated[str | None, typer.Option(help="Only this project's (proj_…).")] = None,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """The projects the model is shared with, newest first."""
    params = {} if project is None else {"project_id": project}
    with _client(base_url, api_key) as client:
        rows = list(client.pages(_permissions_path(checkpoint), params))
    _table(rows, ["id", "project_id", "created_at"])


# -- models and chat -------------------------------------------------------------------

models_app = typer.Typer(help="Base and fine-tuned models on the server.", no_args_is_help=True)


@models_app.command("list")
def models_list(base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """The server's base models and your project's fine-tuned models."""
    with _client(base_url, api_key) as client:
        rows = client.request("GET", "/models")["data"]
    _table(rows, ["id", "owned_by", "created"])


@models_app.command("delete")
def models_delete(model: str, base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """Delete a fine-tuned model of your project (its adapter files with it)."""
    with _client(base_url, api_key) as client:
        client.request("DELETE", f"/models/{model}")
    print(f"{model} deleted")


def _reply(client: Client, model: str, messages: list[dict[str, str]], options: Any) -> str:
    """Stream one answer to the terminal as it is generated; return its text."""
    text = []
    for chunk in client.stream(
        "/chat/completions", {"model": model, "messages": messages, **options}
    ):
        for choice in chunk.get("choices") or []:
            piece = choice.get("delta", {}).get("content") or ""
            text.append(piece)
            print(piece, end="", flush=True)
    print()
    return "".join(text)


def chat(
    model: Annotated[str, typer.Argument(help="A base model, ft:… or ft:…:ckpt-step-N.")],
    prompt: Annotated[
        str | None, typer.Option("--prompt", "-p", help="Ask this once and exit.")
    ] = None,
    system: Annotated[str | None, typer.Option(help="A system message.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="At most this many tokens.")] = None,
    temperature: Annotated[float | None, typer.Option(help="0 for the likeliest text.")] = None,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Chat with a model, its answers streamed as they are generated: one question with
    --prompt, else a conversation read line by line from the terminal (end with Ctrl-D)."""
    options = {
        name: value
        for name, value in (("max_tokens", max_tokens), ("temperature", temperature))
        if value is not None
    }
    messages = [{"role": "system", "content": system}] if system else []
    with _client(base_url, api_key) as client:
        questions = [prompt] if prompt is not None else _lines("you> ")
        for question in questions:
            messages.append({"role": "user", "content": question})
            messages.append(
                {"role": "assistant", "content": _reply(client, model, messages, options)}
            )


def _lines(ask: str) -> Iterator[str]:
    while True:
        try:
            line = input(ask if sys.stdin.isatty() else "")
        except EOFError:
            return
        if line.strip():
            yield line


# -- graders ---------------------------------------------------------------------------

graders_app = typer.Typer(help="Try graders (OpenAI's fine-tuning graders).", no_args_is_help=True)


def _json_file(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        err.print(f"openft: {path} is not a {what} in JSON: {exc}", markup=False)
        raise typer.Exit(code=2) from None


@graders_app.command("run")
def graders_run(
    grader: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="The grader, as JSON.")
    ],
    sample: Annotated[str, typer.Option(help="The model sample to grade.")],
    item: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="The item (a dataset row), as JSON."),
    ] = None,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Grade one sample on the server: print the reward, each sub-reward of a multi
    grader, and the error flags raised (with their details)."""
    body: dict[str, Any] = {"grader": _json_file(grader, "grader"), "model_sample": sample}
    if item is not None:
        body["item"] = _json_file(item, "item")
    with _client(base_url, api_key) as client:
        result = client.request("POST", "/fine_tuning/alpha/graders/run", json=body)
    print(f"reward\t{result['reward']}")
    for name, reward in result.get("sub_rewards", {}).items():
        print(f"{name}\t{reward}")
    errors = result["metadata"]["errors"]
    raised = [flag for flag, value in errors.items() if value is True]
    if raised:
        print("errors\t" + ", ".join(raised))
    for key in (
        "python_grader_runtime_error_details",
        "python_grader_server_error_type",
        "model_grader_server_error_details",
    ):
        if errors.get(key):
            print(f"{key}\t{errors[key]}")


@graders_app.command("validate")
def graders_validate(
    grader: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="The grader, as JSON.")
    ],
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Check a grader on the server: "valid", or the field at fault and why."""
    with _client(base_url, api_key) as client:
        client.request(
            "POST",
            "/fine_tuning/alpha/graders/validate",
            json={"grader": _json_file(grader, "grader")},
        )
    print("valid")
