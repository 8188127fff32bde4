"""The JSON log format (openft.logs): one object per line, whatever writes the line."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import textwrap
import time

import orjson

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


def test_access_lines_are_flushed_together_and_warnings_at_once() -> None:
    """uvicorn's access log (text format) is written by a handler that flushes the stream
    every fraction of a second, not after every line; a warning is flushed at once."""
    config = logs.uvicorn_options("text")["log_config"]
    assert config["handlers"]["access"]["class"] == "openft.logs.BufferedStreamHandler"
    stream = _Counted()
    handler = logs.BufferedStreamHandler(stream)
    for n in range(100):
        handler.handle(_record(f"GET /{n}"))
    assert stream.getvalue().splitlines() == [f"GET /{n}" for n in range(100)]
    assert stream.flushes == 0
    for _ in range(50):  # the handler's thread flushes within its interval
        if stream.flushes:
            break
        time.sleep(0.05)
    assert stream.flushes == 1
    handler.handle(_record("slow down", logging.WARNING))
    assert stream.flushes == 2 and stream.getvalue().endswith("slow down\n")
