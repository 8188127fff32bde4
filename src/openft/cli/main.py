"""`openft`: serve the API, run workers, manage keys and the database schema (the
administrator's commands, on the database); and the user's commands, over HTTP."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from openft import logs
from openft.cli.user import chat as user_chat
from openft.cli.user import (
    checkpoints_app,
    files_app,
    graders_app,
    jobs_app,
    models_app,
    webhooks_app,
)
from openft.cli.user import events as user_events
from openft.domain.entities import KeyScope
from openft.domain.errors import NotFound, SchemaMismatch, Unauthenticated
from openft.logs import LogFormat
from openft.services.keys import DEFAULT_PROJECT
from openft.settings import Settings

if TYPE_CHECKING:
    from openft.services.container import Services

app = typer.Typer(
    help="openft: a self-hosted, OpenAI-compatible fine-tuning service.", no_args_is_help=True
)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
blobs_app = typer.Typer(help="The blob store (files, checkpoints, adapters).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
app.add_typer(blobs_app, name="blobs")
# The user's commands: HTTP clients of a server's public API.
app.add_typer(files_app, name="files")
app.add_typer(jobs_app, name="jobs")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(models_app, name="models")
app.add_typer(checkpoints_app, name="checkpoints")
app.add_typer(graders_app, name="graders")
app.command("events")(user_events)
app.command("chat")(user_chat)

DataDir = Annotated[
    Path | None,
    typer.Option(
        help="Where the SQLite database and files live [env OPENFT_DATA_DIR; default"
        " ./openft-data]."
    ),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        help="sqlite:///PATH or postgresql+psycopg://USER@HOST/DB [env OPENFT_DATABASE_URL]."
    ),
]
BlobUrl = Annotated[
    str | None,
    typer.Option(
        help="Where files, checkpoints and adapters live: s3://BUCKET or s3://BUCKET/PREFIX"
        " (endpoint and"
        " credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,"
        " AWS_REGION) or a directory [env OPENFT_BLOB_URL; default: the data dir]."
    ),
]


LogFormatOption = Annotated[
    LogFormat | None,
    typer.Option(
        help="text, or json: one JSON object per line (time, level, message, request,"
        " project and job ids where known) [env OPENFT_LOG_FORMAT; default text].",
    ),
]


def _settings(**flags: Any) -> Settings:
    # Flags left unset fall back to OPENFT_* variables, then to the defaults.
    return Settings(**{name: value for name, value in flags.items() if value is not None})


def _fail(message: str) -> typer.Exit:
    typer.echo(f"openft: {message}", err=True)
    return typer.Exit(code=2)


NprocPerNode = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Processes that train each job together, through torchrun: one per GPU"
        " [env OPENFT_NPROC_PER_NODE; default 1].",
    ),
]
Distributed = Annotated[
    Literal["ddp", "fsdp", "deepspeed"] | None,
    typer.Option(
        help="How several processes share the model: ddp (a copy each), fsdp or deepspeed"
        " (ZeRO-3; sharded, for models that do not fit one GPU) [env OPENFT_DISTRIBUTED;"
        " default ddp].",
    ),
]


def _check_training(settings: Settings) -> None:
    """Refuse to start a worker that could not run its jobs, saying why (rather than
    failing every job it claims)."""
    import importlib.util

    if settings.nproc_per_node > 1 and importlib.util.find_spec("torch") is None:
        raise _fail("--nproc-per-node needs torch on the worker: pip install 'openft[train]'")
    if settings.distributed == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        raise _fail(
            "--distributed deepspeed needs DeepSpeed on the worker (pip install deepspeed);"
            " or use fsdp"
        )


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to bind [env OPENFT_HOST; default 127.0.0.1].")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port [env OPENFT_PORT; default 8000].")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    blob_url: BlobUrl = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            help="A base model to offer, NAME=SOURCE (Hugging Face id or local dir);"
            " repeatable [env OPENFT_MODELS]."
        ),
    ] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = True,
    worker: Annotated[
        bool, typer.Option(help="Also train: run a worker inside this process.")
    ] = True,
    nproc_per_node: NprocPerNode = None,
    distributed: Distributed = None,
    log_format: LogFormatOption = None,
) -> None:
    """Run the API server (SQLite in --data-dir unless --database-url says otherwise),
    with a worker that trains queued jobs unless --no-worker."""
    import uvicorn

    from openft.api.app import create_app
    from openft.wiring import build_services

    settings = _settings(
        host=host,
        port=port,
        data_dir=data_dir,
        database_url=database_url,
        blob_url=blob_url,
        nproc_per_node=nproc_per_node,
        distributed=distributed,
        log_format=log_format,
    )
    logs.configure(settings.log_format)
    if worker:
        _check_training(settings)
    try:
        services = build_services(settings, settings.base_models(model or []))
    except (SchemaMismatch, ValueError) as exc:
        raise _fail(str(exc)) from None
    background = []
    if worker:
        background.append(
            _worker_task(
                f"http://{_loopback(settings.host)}:{settings.port}",
                _embedded_worker_key(services, settings.data_dir),
                f"embedded-{uuid.uuid4().hex[:8]}",
                settings,
            )
        )
    # The access lines: openft's own writer, or uvicorn's logger (JSON, a terminal).
    writer = logs.access_log(settings.log_format, access_log)
    api = create_app(
        services,
        revalidate_every_seconds=settings.revalidate_after_seconds,
        webhook_every_seconds=settings.webhook_poll_seconds,
        background=background,
        max_request_bytes=settings.max_request_bytes,
        access_log=writer,
    )
    if settings.metrics_address:
        from openft.api.metrics import serve_metrics

        try:
            serve_metrics(api.state.metrics_registry, settings.metrics_address)
        except (OSError, ValueError) as exc:
            services.close()
            raise _fail(f"Cannot serve metrics on {settings.metrics_address}: {exc}") from None
    try:
        config = uvicorn.Config(
            api,
            host=settings.host,
            port=settings.port,
            access_log=access_log and writer is None,  # else openft writes them
            log_level="info",
            # Its own format for text; for json, its loggers hand records to ours.
            **logs.uvicorn_options(settings.log_format),
            # A request still running this long after the stop signal is cut.
            timeout_graceful_shutdown=30,
        )
        server = uvicorn.Server(config)
        handle_exit = server.handle_exit

        def stop(sig: int, frame: Any) -> None:
            # Event streams never end by themselves: end them (clients reconnect with
            # Last-Event-ID, to this server's successor) so the shutdown does not wait.
            services.live.stop_streams()
            handle_exit(sig, frame)

        server.handle_exit = stop  # type: ignore[method-assign]
        # What exists now (modules, the app, the services) lives as long as the process:
        # kept out of the collector's full passes, which would scan it all again and
        # again, pausing every stream and report for tens of milliseconds each time
        # (bench/live_bench.py: p99 with 1,000 followers).
        gc.collect()
        gc.freeze()
        server.run()
    finally:
        services.close()


EMBEDDED_WORKER_PROJECT = "openft-embedded-worker"
EMBEDDED_WORKER_KEY = "embedded-worker.key"


def _embedded_worker_key(services: Services, data_dir: Path) -> str:
    """The embedded worker's key: kept (owner-only) in the data directory, so that every
    start reuses it; a new one only when it is missing or was revoked."""
    path = data_dir / EMBEDDED_WORKER_KEY
    if path.exists():
        key = path.read_text().strip()
        with contextlib.suppress(Unauthenticated):  # revoked, or another database's
            if services.keys.authenticate(key).scope is KeyScope.WORKER:
                return key
    key, _record = services.keys.create(EMBEDDED_WORKER_PROJECT, KeyScope.WORKER)
    data_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(key + "\n")
    partial.chmod(0o600)
    os.replace(partial, path)
    return key


def _loopback(host: str) -> str:
    """Where this process's own worker reaches the server it binds to `host`."""
    if host in ("0.0.0.0", "", "localhost"):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _worker_task(base_url: str, key: str, worker_id: str, settings: Settings) -> Any:
    from openft.wiring import runner_settings
    from openft.worker.client import KeyRefused, WorkerClient
    from openft.worker.loop import run_worker

    def task(stop: threading.Event) -> None:
        client = WorkerClient(base_url, key, worker_id)
        try:
            run_worker(client, runner_settings(settings), stop)
        except KeyRefused as exc:
            logging.getLogger("openft.worker").error(
                "%s The server refuses this worker's key (revoked?): the worker stops. "
                "Start it with a valid worker key (`openft keys create --scope worker`).",
                exc.describe(),
            )
            raise
        finally:
            client.close()

    return task


@app.command("worker")
def worker_command(
    base_url: Annotated[
        str, typer.Option(envvar="OPENFT_BASE_URL", help="The openft server, e.g. http://api:8000.")
    ],
    key: Annotated[
        str,
        typer.Option(
            envvar="OPENFT_WORKER_KEY", help="A worker key: `openft keys create --scope worker`."
        ),
    ],
    worker_id: Annotated[
        str | None, typer.Option(help="A name for this worker [default: host-pid].")
    ] = None,
    work_dir: Annotated[
        Path | None, typer.Option(help="Scratch space for jobs [env OPENFT_WORK_DIR].")
    ] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="Checkpoint every N steps (0: each epoch).")
    ] = None,
    nproc_per_node: NprocPerNode = None,
    distributed: Distributed = None,
    log_format: LogFormatOption = None,
) -> None:
    """Run a worker that trains jobs for the server at --base-url, over HTTP only."""
    settings = _settings(
        work_dir=work_dir or Path("openft-work"),
        checkpoint_every=checkpoint_every,
        nproc_per_node=nproc_per_node,
        distributed=distributed,
        log_format=log_format,
    )
    logs.configure(settings.log_format)
    _check_training(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    name = worker_id or f"{socket.gethostname()}-{os.getpid()}"
    from openft.worker.client import KeyRefused

    try:
        _worker_task(base_url, key, name, settings)(stop)
    except KeyboardInterrupt:
        stop.set()
    except KeyRefused:  # said in the log: exit non-zero, so a supervisor sees it
        raise typer.Exit(code=3) from None


@contextlib.contextmanager
def _admin_services(data_dir: Path | None, database_url: str | None) -> Iterator[Services]:
    """The services over the database the flags name, for one administrative command."""
    from openft.wiring import build_services

    try:
        services = build_services(_settings(data_dir=data_dir, database_url=database_url), [])
    except SchemaMismatch as exc:
        raise _fail(str(exc)) from None
    try:
        yield services
    finally:
        services.close()


@keys_app.command("create")
def keys_create(
    project: Annotated[
        str, typer.Option(help="The project the key belongs to (created if new).")
    ] = DEFAULT_PROJECT,
    scope: Annotated[
        KeyScope,
        typer.Option(
            help="project: the public API; worker: may also report into jobs; admin:"
            " organisation-wide, checkpoint permissions only (no project)."
        ),
    ] = KeyScope.PROJECT,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Print a new API key (one line on stdout). Only its hash is stored."""
    with _admin_services(data_dir, database_url) as services:
        key, record = services.keys.create(project, scope)
    typer.echo(
        f"created {record.scope.value} key {record.id} for project {record.project_name}"
        f" ({record.project_id})",
        err=True,
    )
    sys.stdout.write(key + "\n")


def _when(timestamp: int | None) -> str:
    if timestamp is None:
        return "never"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@keys_app.command("list")
def keys_list(
    revoked: Annotated[bool, typer.Option(help="Also list revoked keys.")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """One key per line: its id, project, scope, created, last used (never the key)."""
    with _admin_services(data_dir, database_url) as services:
        keys = services.keys.list(include_revoked=revoked)
    for key in keys:
        fields = [
            key.id,
            key.project_name,
            key.scope.value,
            f"created={_when(key.created_at)}",
            f"last_used={_when(key.last_used_at)}",
        ]
        if key.revoked_at is not None:
            fields.append(f"revoked={_when(key.revoked_at)}")
        typer.echo("\t".join(fields))


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_…), as `keys list` shows.")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a key: servers refuse it within their key cache time (10 s by default)."""
    with _admin_services(data_dir, database_url) as services:
        try:
            services.keys.revoke(key_id)
        except NotFound as exc:
            raise _fail(exc.message) from None
        # Its workers' jobs go back to the queue now, saying why, not once they time out.
        released = services.worker.release_key(key_id)
    typer.echo(
        f"revoked {key_id}" + (f"; {released} running job(s) requeued" if released else ""),
        err=True,
    )


@app.command()
def demo() -> None:
    """Run the whole flow offline: a tiny local model, a server, a job, its loss curve."""
    from openft.demo import main as run_demo

    run_demo()


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Upgrade the database schema to this openft's revision (never drops data)."""
    from openft.store.database import make_admin_engine
    from openft.store.migrate import current_revision, head_revision, upgrade
    from openft.wiring import database_url as url_of

    engine = make_admin_engine(url_of(_settings(data_dir=data_dir, database_url=database_url)))
    before = current_revision(engine)
    upgrade(engine)
    typer.echo(f"schema: {before or 'empty'} -> {head_revision()}")
    engine.dispose()


@blobs_app.command("migrate")
def blobs_migrate(
    to: Annotated[str, typer.Option(help="The new blob store: s3://BUCKET or s3://BUCKET/PREFIX.")],
    data_dir: DataDir = None,
    blob_url: Annotated[
        str | None,
        typer.Option(
            help="The blob store to copy from [env OPENFT_BLOB_URL; default: the data dir]."
        ),
    ] = None,
) -> None:
    """Copy every blob into another store, verifying each copy's size and SHA-256.
    Resumable: blobs already there intact are skipped. Then serve with --blob-url TO."""
    from openft.services.blob_migration import migrate
    from openft.store.blob_stores import open_blobs

    settings = _settings(data_dir=data_dir, blob_url=blob_url)
    logs.configure(settings.log_format)
    try:
        source = open_blobs(settings.blob_url, settings.data_dir)
        target = open_blobs(to, settings.data_dir)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if source.url == target.url:
        raise _fail(f"--to names the store blobs are copied from ({source.url})")

    def progress(key: str, copied: bool) -> None:
        typer.echo(f"{'copied' if copied else 'already there'}: {key}")

    report = migrate(source, target, progress)
    typer.echo(
        f"{report.copied} copied, {report.skipped} already there, "
        f"{report.bytes} bytes verified in {target.url}"
    )


if __name__ == "__main__":
    app()
