"""The JSON log format (openft.logs): one object per line, whatever writes the line."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import textwrap
import time
from typing import Any

import orjson
from uvicorn.config import LOGGING_CONFIG
from uvicorn.logging import AccessFormatter
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from openft import logs


def _record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("openft.test", level, __file__, 1, message, None, None)


def test_a_record_is_one_json_line_with_the_fields_bound_where_it_is_logged() -> None:
    formatter = logs.JsonFormatter()
    with logs.bound(request_id="req_1", project_id="proj_1", job_id="ftjob-1"):
        line = formatter.format(_record("two\nlines"))
    assert "\n" not in line
    entry = orjson.loads(line)
    assert entry["message"] == "two\nlines" and entry["level"] == "info"
    assert entry["time"].endswith("+00:00")
    assert (entry["request_id"], entry["project_id"], entry["job_id"]) == (
        "req_1",
        "proj_1",
        "ftjob-1",
    )
    # Outside the block: unbound again.
    assert "job_id" not in orjson.loads(formatter.format(_record("after")))


def test_every_byte_written_to_stdout_or_stderr_becomes_a_json_line() -> None:
    program = textwrap.dedent(
        """
        import logging, os, sys, warnings
        from openft import logs
        logs.configure("json")
        print("a print")
        sys.stderr.write("progress 1/2\\rprogress 2/2\\n")
        os.write(2, b"a native library's line\\n")
        warnings.warn("deprecated")
        logs.bind(job_id="ftjob-x")
        logging.getLogger("openft.x").error("failed\\nover two lines")
        print("no newline at the end", end="")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, timeout=60, check=True
    )
    assert done.stdout == b""  # everything went to the log stream: stderr
    entries = [orjson.loads(line) for line in done.stderr.splitlines()]
    messages = [entry["message"] for entry in entries]
    for expected in (
        "a print",
        "progress 1/2",
        "progress 2/2",
        "a native library's line",
        "failed\nover two lines",
        "no newline at the end",
    ):
        assert expected in messages, messages
    assert any("deprecated" in message for message in messages)
    assert {"time", "level", "message"} <= entries[0].keys()
    failed = next(entry for entry in entries if entry["message"].startswith("failed"))
    assert failed["job_id"] == "ftjob-x" and failed["level"] == "error"


class _Counted(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def _uvicorn_line(scope: dict[str, Any], status: int) -> str:
    """The line uvicorn's own access logger writes (its formatter, without colours)."""
    config = LOGGING_CONFIG["formatters"]["access"]
    formatter = AccessFormatter(fmt=config["fmt"], use_colors=False)
    args = (
        get_client_addr(scope),  # type: ignore[arg-type]
        scope["method"],
        get_path_with_query_string(scope),  # type: ignore[arg-type]
        scope["http_version"],
        status,
    )
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, None
    )
    return formatter.format(record)


def test_access_lines_are_uvicorns_and_flushed_together_errors_at_once() -> None:
    """openft writes uvicorn's access line itself (text format, to a file or pipe): the
    same bytes as uvicorn's formatter, the stream flushed every fraction of a second
    rather than after every line, and at once after a 5xx."""
    scopes: list[dict[str, Any]] = [
        {
            "client": ("127.0.0.1", 5555),
            "method": "GET",
            "path": "/v1/models",
            "query_string": b"",
            "http_version": "1.1",
        },
        {
            "client": ("::1", 80),
            "method": "POST",
            "path": "/v1/fine_tuning/jobs/ftjob-1/é vents",
            "query_string": b"after=ftevent-x&limit=2",
            "http_version": "1.0",
        },
        {"client": None, "method": "GET", "path": "/", "query_string": b"", "http_version": "2"},
    ]
    stream = _Counted()
    access = logs.AccessLog(stream)
    expected = []
    for scope, status in zip(scopes, (200, 404, 299), strict=True):
        access.write(scope, status)
        expected.append(_uvicorn_line(scope, status))
    assert stream.getvalue().splitlines() == expected
    assert stream.flushes == 0
    for _ in range(50):  # its thread flushes within its interval
        if stream.flushes:
            break
        time.sleep(0.05)
    assert stream.flushes == 1
    access.write(scopes[0], 503)
    assert stream.flushes == 2 and stream.getvalue().endswith(
        '"GET /v1/models HTTP/1.1" 503 Service Unavailable\n'
    )


def test_openft_writes_the_access_lines_only_in_text_to_a_file_or_pipe() -> None:
    assert logs.access_log("json", True) is None  # uvicorn's records, as JSON lines
    assert logs.access_log("text", False) is None  # --no-access-log
    # Under pytest, stdout is captured (not a terminal).
    assert isinstance(logs.access_log("text", True), logs.AccessLog)
