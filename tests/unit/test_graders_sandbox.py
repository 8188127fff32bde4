"""The python grader's sandbox (bubblewrap), run for real: what a grader may and may not
do, and that each misdeed scores 0 with its flag."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from openft.graders import GradeResult, PythonLimits, Sample, Sandbox, grade, parse
from openft.graders.python_sandbox import Outcome

SMALL = PythonLimits(timeout_seconds=2, memory_mb=512, disk_mb=8, concurrency=2)


def run(source: str, item: Any = None, limits: PythonLimits = SMALL) -> Outcome:
    async def once() -> Outcome:
        sandbox = Sandbox(limits)
        try:
            return await sandbox.run(source, Sample("out").namespace(), item or {})
        finally:
            await sandbox.aclose()

    return asyncio.run(once())


def graded(source: str, item: Any = None, limits: PythonLimits = SMALL) -> GradeResult:
    grader = parse({"type": "python", "name": "p", "source": source})

    async def once() -> GradeResult:
        sandbox = Sandbox(limits)
        try:
            return await grade(grader, Sample("out"), item or {}, sandbox=sandbox)
        finally:
            await sandbox.aclose()

    return asyncio.run(once())


def test_a_grader_returns_its_score() -> None:
    source = "def grade(sample, item):\n    return len(sample['output_text']) + item['n']\n"
    assert run(source, {"n": 0.5}) == Outcome(reward=3.5)
    # What the server has installed is importable, numpy's numbers are numbers.
    source = "import numpy\ndef grade(sample, item):\n    return numpy.float32(0.25)\n"
    assert run(source) == Outcome(reward=0.25)


def test_a_loop_is_stopped_at_the_limit() -> None:
    result = graded("def grade(sample, item):\n    while True:\n        pass\n")
    assert result.reward == 0
    assert result.errors["python_grader_runtime_error"]
    assert result.errors["unresponsive_reward_error"]
    assert result.details["python_grader_runtime_error_details"] == (
        "grade() ran past the 2 s limit"
    )


def test_the_network_is_unreachable() -> None:
    source = (
        "import socket\n"
        "def grade(sample, item):\n"
        "    socket.create_connection(('192.0.2.1', 443), timeout=5)\n"
        "    return 1\n"
    )
    result = graded(source)
    assert result.reward == 0 and result.errors["python_grader_runtime_error"]
    assert "Network is unreachable" in str(result.details["python_grader_runtime_error_details"])


def test_only_its_temporary_directory_is_writable(tmp_path: Path) -> None:
    target = tmp_path / "written.txt"
    source = "def grade(sample, item):\n    open(item['path'], 'w').write('x')\n    return 1\n"
    result = graded(source, {"path": str(target)})
    assert result.reward == 0 and result.errors["python_grader_runtime_error"]
    assert not target.exists()
    usr = graded(source, {"path": "/usr/planted"})
    assert "Read-only file system" in str(usr.details["python_grader_runtime_error_details"])
    assert run(source, {"path": "/tmp/scratch.txt"}) == Outcome(reward=1.0)


def test_the_host_is_invisible(tmp_path: Path) -> None:
    data_dir = tmp_path / "openft-data"
    data_dir.mkdir()
    (data_dir / "openft.db").write_text("secret")
    source = (
        "import os\n"
        "def grade(sample, item):\n"
        "    seen = [p for p in item['paths'] if os.path.exists(p)]\n"
        "    assert not seen, seen\n"
        "    return len(os.environ)\n"
    )
    paths = [str(data_dir), str(data_dir / "openft.db"), "/etc/passwd", "/etc/hostname", "/home"]
    outcome = run(source, {"paths": paths})
    assert outcome.error is None, outcome.details
    # HOME, PATH, LANG, three thread counts (and LC_CTYPE, which Python may add).
    assert outcome.reward is not None and outcome.reward <= 7


def test_memory_beyond_the_limit_is_a_runtime_error() -> None:
    source = "def grade(sample, item):\n    block = bytearray(1024 ** 3)\n    return 1\n"
    result = graded(source)
    assert result.reward == 0 and result.errors["python_grader_runtime_error"]
    assert "MemoryError" in str(result.details["python_grader_runtime_error_details"])


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("def grade(sample, item):\n    return 'high'\n", "not a number"),
        ("def grade(sample, item):\n    return float('nan')\n", "nan"),
        ("def grade(sample, item):\n    raise KeyError('label')\n", "KeyError: 'label'"),
        ("import os\ndef grade(sample, item):\n    os._exit(3)\n", "exited (3)"),
        ("grade = 3\n", "defines no function"),
    ],
)
def test_a_grader_that_does_not_score_is_a_runtime_error(source: str, says: str) -> None:
    result = graded(source)
    assert result.reward == 0 and result.errors["python_grader_runtime_error"]
    assert says in str(result.details["python_grader_runtime_error_details"])


def test_printing_does_not_garble_the_score() -> None:
    source = (
        "import sys\n"
        "def grade(sample, item):\n"
        "    print('{\"reward\": 9}')\n"
        "    sys.stdout.write('x' * 2_000_000)\n"
        "    return 0.5\n"
    )
    assert run(source) == Outcome(reward=0.5)


def test_without_bubblewrap_it_is_a_server_error() -> None:
    limits = PythonLimits(timeout_seconds=2, bwrap="/nonexistent/bwrap")
    result = graded("def grade(sample, item):\n    return 1\n", limits=limits)
    assert result.reward == 0 and result.errors["python_grader_server_error"]
    assert result.details["python_grader_server_error_type"] == "sandbox_unavailable"


def test_limits_come_from_the_environment() -> None:
    limits = PythonLimits.from_env(
        {
            "OPENFT_GRADER_PYTHON_TIMEOUT_SECONDS": "7.5",
            "OPENFT_GRADER_PYTHON_MEMORY_MB": "300",
            "OPENFT_GRADER_CONCURRENCY": "3",
        }
    )
    assert (limits.timeout_seconds, limits.memory_mb, limits.disk_mb, limits.concurrency) == (
        7.5,
        300,
        1024,
        3,
    )
    assert PythonLimits.from_env({}).timeout_seconds == 120
    with pytest.raises(ValueError):
        PythonLimits.from_env({"OPENFT_GRADER_PYTHON_TIMEOUT_SECONDS": "0"})
    assert json.dumps(limits.memory_mb) == "300"


def test_sandboxes_started_ahead_are_used_once_and_ended() -> None:
    # Each call marks its /tmp: no call finds an earlier call's mark.
    source = (
        "import os\n"
        "def grade(sample, item):\n"
        "    seen = os.path.exists('/tmp/mark')\n"
        "    open('/tmp/mark', 'w').close()\n"
        "    return float(seen)\n"
    )

    async def calls() -> tuple[list[float | None], list[asyncio.subprocess.Process]]:
        sandbox = Sandbox(SMALL)
        rewards = [(await sandbox.run(source, {}, {})).reward for _ in range(4)]
        spares = list(sandbox._spares)
        await sandbox.aclose()
        return rewards, spares

    rewards, spares = asyncio.run(calls())
    assert rewards == [0.0, 0.0, 0.0, 0.0]
    assert len(spares) == 1  # one started ahead, for the next call
    assert all(process.returncode is not None for process in spares)  # ended by aclose


def test_writing_past_the_disk_limit_is_a_runtime_error() -> None:
    source = (
        "def grade(sample, item):\n"
        "    with open('/tmp/big', 'wb') as f:\n"
        "        for _ in range(64):\n"
        "            f.write(b'x' * 1024 * 1024)\n"
        "    return 1\n"
    )
    result = graded(source)  # SMALL allows 8 MB
    assert result.reward == 0 and result.errors["python_grader_runtime_error"]
    details = str(result.details["python_grader_runtime_error_details"])
    assert "SIGXFSZ" in details or "No space left" in details or "File too large" in details
