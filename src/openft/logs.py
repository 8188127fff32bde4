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
import copy
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

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


class BufferedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes each record at once but flushes the stream only
    every `FLUSH_SECONDS` (and at exit), not after every record: uvicorn's access line,
    one a request, was a system call a request (about a tenth of an events page's time,
    bench/events_bench.py). A record of WARNING or above is flushed at once."""

    FLUSH_SECONDS = 0.2

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._dirty = False
        threading.Thread(target=self._flush_often, name="log-flush", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
            self._dirty = True
            if record.levelno >= logging.WARNING:
                self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self._dirty = False
        super().flush()

    def _flush_often(self) -> None:
        while True:
            time.sleep(self.FLUSH_SECONDS)
            if self._dirty:
                with contextlib.suppress(Exception):  # a closed stream at exit
                    self.flush()


def uvicorn_options(log_format: LogFormat) -> dict[str, Any]:
    """`uvicorn.Config`'s logging options: for text its own configuration and format,
    its access lines written by a `BufferedStreamHandler`; for JSON a `log_config` under
    which its loggers hand their records to the root logger's JSON handler."""
    if log_format == "text":
        from uvicorn.config import LOGGING_CONFIG

        config = copy.deepcopy(LOGGING_CONFIG)
        config["handlers"]["access"]["class"] = f"{__name__}.BufferedStreamHandler"
        return {"log_config": config}
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
