"""The JSON log format (openft.logs): one object per line, whatever writes the line."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

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
