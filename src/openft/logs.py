"""The process's log: text lines (the default) or, with `--log-format json`, one JSON
object per line for a log shipper, with the request, project and job each line is about.

In the JSON format every byte the process writes to its stdout and stderr becomes part
of a JSON line: the log records themselves, uvicorn's (through the root logger), Python
warnings (`logging.captureWarnings`), and whatever else writes to file descriptors 1 and
2 (a library's `print`, tqdm's bars, a native library's warnings) through a pipe whose
lines are wrapped. The fields "where known" come from context variables: the API sets
them per request (`bind`), the worker per job (`bound`)."""

from __future__ import annotations

import atexit
import contextlib
import http
import logging
import os
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import orjson

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# What a line is about, where the code that logs it knows. Context variables: each
# request (an asyncio task) and each worker thread sees its own.
_request_id: ContextVar[str | None] = ContextVar("openft_request_id", default=None)
_project_id: ContextVar[str | None] = ContextVar("openft_project_id", default=None)
_job_id: ContextVar[str | None] = ContextVar("openft_job_id", default=None)
_FIELDS = (("request_id", _request_id), ("project_id", _project_id), ("job_id", _job_id))
_VARS = dict(_FIELDS)

# The trainer's output, relayed line by line by the worker (worker/runner.py): in the
# text format it stays in the attempt's trainer.log only, as it always did.
TRAINER_LOGGER = "openft.trainer"


def bind(**fields: str | None) -> None:
    """Say what the rest of the current context (a request's task, a thread) is about:
    `request_id`, `project_id`, `job_id`. None leaves a field as it is."""
    for name, value in fields.items():
        if value is not None:
            _VARS[name].set(value)


@contextlib.contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    """`bind` for a block only: a worker thread that runs one job after another."""
    tokens = [(_VARS[name], _VARS[name].set(value)) for name, value in fields.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def context() -> dict[str, str]:
    """The fields bound where this is called."""
    return {name: value for name, var in _FIELDS if (value := var.get()) is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (orjson escapes a message's newlines)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, var in _FIELDS:
            # A record may carry a field itself (`extra=`); else the context's.
            value = getattr(record, name, None) or var.get()
            if value is not None:
                entry[name] = value
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            with contextlib.suppress(ValueError):  # uvicorn's access line, as fields too
                client, method, path, _version, status = record.args
                entry.update(client=client, method=method, path=path, status=status)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    def handleError(self, record: logging.LogRecord) -> None:
        # The default prints a traceback to sys.stderr, which in the JSON format is the
        # pipe this handler's own relay drains: say it in one line, on the real stream.
        with contextlib.suppress(Exception):
            line = {"level": "error", "message": f"could not log a {record.levelname} record"}
            self.stream.write(orjson.dumps(line).decode() + "\n")
            self.stream.flush()


def configure(log_format: LogFormat = "text") -> None:
    """Set up the process's logging (once, at a command's start)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per worker request
    if log_format == "text":
        logging.basicConfig(level=logging.INFO, format=TEXT_FORMAT)
        logging.getLogger(TRAINER_LOGGER).setLevel(logging.WARNING)
        return
    # The real stderr, kept before descriptors 1 and 2 become the pipe below.
    stream = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    handler = _Handler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    _wrap_descriptors()


class AccessLog:
    """uvicorn's access line, one a request, written by openft in the text format when
    the log goes to a file or a pipe: the same line (`INFO:     127.0.0.1:5555 - "GET
    /v1/models HTTP/1.1" 200 OK`) without the logging machinery, whose record, formatter
    and handler lock cost about 10 µs a line, some 5% of an events page's CPU
    (bench/events_bench.py). The stream is flushed every `FLUSH_SECONDS` and at exit,
    not after every line (a system call a request); a line with a 5xx status at once."""

    FLUSH_SECONDS = 0.2

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._dirty = False
        # The event loop writes, a thread flushes: a text stream is not safe for both.
        self._lock = threading.Lock()
        threading.Thread(target=self._flush_often, name="access-log-flush", daemon=True).start()
        atexit.register(self.flush)

    def write(self, scope: Mapping[str, Any], status: int) -> None:
        """The line of a request (an ASGI scope) answered with `status`, as uvicorn's
        `AccessFormatter` writes it without colours."""
        client = scope.get("client")
        address = f"{client[0]}:{client[1]}" if client else ""
        path = urllib.parse.quote(scope["path"])
        if query := scope["query_string"]:
            path = f"{path}?{query.decode('ascii')}"
        line = (
            f"INFO:     {address} - "
            f'"{scope["method"]} {path} HTTP/{scope["http_version"]}" '
            f"{status} {_PHRASES.get(status, '')}\n"
        )
        with self._lock:
            self._stream.write(line)
            self._dirty = True
        if status >= 500:
            self.flush()

    def flush(self) -> None:
        with self._lock, contextlib.suppress(Exception):  # a closed stream at exit
            self._dirty = False
            self._stream.flush()

    def _flush_often(self) -> None:
        while True:
            time.sleep(self.FLUSH_SECONDS)
            if self._dirty:
                self.flush()


_PHRASES = {status.value: status.phrase for status in http.HTTPStatus}


def access_log(log_format: LogFormat, enabled: bool) -> AccessLog | None:
    """openft's writer of the access lines where it writes them (the text format, to a
    file or a pipe); None where uvicorn's access logger does (JSON: its records become
    JSON lines with the request's fields; a terminal: uvicorn's colours) or none is
    wanted (`--no-access-log`)."""
    if not enabled or log_format != "text" or sys.stdout.isatty():
        return None
    return AccessLog(sys.stdout)


def uvicorn_options(log_format: LogFormat) -> dict[str, Any]:
    """`uvicorn.Config`'s logging options: for text its own configuration and format;
    for JSON a `log_config` under which its loggers hand their records to the root
    logger's JSON handler."""
    if log_format == "text":
        return {}
    loggers = {
        name: {"handlers": [], "level": "INFO", "propagate": True}
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
    }
    return {"log_config": {"version": 1, "disable_existing_loggers": False, "loggers": loggers}}


def _wrap_descriptors() -> None:
    """Point descriptors 1 and 2 at a pipe whose lines are logged as JSON records, so
    that nothing written to stdout or stderr (by Python or native code) breaks the
    one-object-per-line rule."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    read_end, write_end = os.pipe()
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)
    relay = threading.Thread(target=_relay, args=(read_end,), name="log-relay", daemon=True)
    relay.start()

    def finish() -> None:
        # At exit: flush what Python still buffers, close the pipe's write ends so that
        # the relay reads to its end, and let it log the last lines.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
        relay.join(timeout=2)

    atexit.register(finish)


def _relay(read_end: int) -> None:
    # tqdm redraws a bar with "\r": each redraw is a line of its own.
    logger = logging.getLogger("openft.output")
    buffer = b""
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while chunk := pipe.read(1 << 16):
            *lines, buffer = (buffer + chunk).replace(b"\r", b"\n").split(b"\n")
            for line in lines:
                _log_output(logger, line)
    _log_output(logger, buffer)


def _log_output(logger: logging.Logger, line: bytes) -> None:
    text = line.decode("utf-8", errors="replace").rstrip()
    if text.strip():
        with contextlib.suppress(Exception):  # the relay must outlive any one line
            logger.info("%s", text)
