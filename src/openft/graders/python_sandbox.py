"""The python grader's sandbox: each call runs `grade(sample, item)` in a fresh process
under bubblewrap (`bwrap`, Debian's package), never in the server's process.

What the process sees and may do:
- no network (every namespace unshared: net, pid, ipc, uts, cgroup, user), no
  capabilities, an unprivileged uid, a new session (no terminal), an empty environment;
- read-only: /usr (and the /bin, /lib, … links to it), this Python's installation and its
  virtual environment (so the grader may import what the server has installed, as
  OpenAI's graders may import numpy or rapidfuzz); nothing else of the host, so neither
  the server's data directory nor its configuration is visible;
- writable: a private tmpfs at /tmp (its working directory), at most the disk limit;
- a wall-clock limit (OPENFT_GRADER_PYTHON_TIMEOUT_SECONDS, default 120) after which the
  whole sandbox is killed, an address-space limit (OPENFT_GRADER_PYTHON_MEMORY_MB,
  default 2048) and a file-size limit (OPENFT_GRADER_PYTHON_DISK_MB, default 1024),
  OpenAI's own limits; what it prints is read up to 64 KiB.

The sample and item go in as JSON on stdin; the reward comes back as one JSON line on
stdout (`sandbox_harness.py`)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

OUTPUT_LIMIT = 64 * 1024
# Sandboxes started ahead of the calls that will use them (at most the concurrency).
SPARES = 4
MiB = 1024 * 1024


@dataclass(frozen=True)
class PythonLimits:
    timeout_seconds: float = 120.0
    memory_mb: int = 2048
    disk_mb: int = 1024
    # Sandboxes run at once by one process (a batch of samples, or the API's requests).
    concurrency: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))
    bwrap: str = "bwrap"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> PythonLimits:
        """The OPENFT_GRADER_* settings: the trainer process grades without the server's
        Settings, so the graders read the same variables themselves."""
        env = dict(os.environ if env is None else env)
        default = cls()

        def number(name: str, fallback: float) -> float:
            raw = env.get(f"OPENFT_GRADER_{name}")
            if raw is None or not raw.strip():
                return fallback
            value = float(raw)
            if not value > 0:
                raise ValueError(f"OPENFT_GRADER_{name} must be above 0, not {raw!r}")
            return value

        return cls(
            timeout_seconds=number("PYTHON_TIMEOUT_SECONDS", default.timeout_seconds),
            memory_mb=int(number("PYTHON_MEMORY_MB", default.memory_mb)),
            disk_mb=int(number("PYTHON_DISK_MB", default.disk_mb)),
            concurrency=int(number("CONCURRENCY", default.concurrency)),
            bwrap=env.get("OPENFT_GRADER_BWRAP") or default.bwrap,
        )


@dataclass(frozen=True)
class Outcome:
    """A reward, or why there is none: `error` is "runtime" (the grader's fault: raised,
    returned a non-number, ran out of memory, was killed), "timeout", or "server" (the
    sandbox could not run it)."""

    reward: float | None = None
    error: str | None = None
    details: str | None = None


_HARNESS = files("openft.graders").joinpath("sandbox_harness.py").read_text(encoding="utf-8")


def _binds() -> list[str]:
    """Read-only binds of the system and this Python, as the host lays them out."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for file in ("/etc/ld.so.cache", "/etc/localtime"):
        if Path(file).exists():
            args += ["--ro-bind", file, file]
    roots: list[Path] = []
    for prefix in (sys.prefix, sys.base_prefix, str(Path(sys.executable).resolve().parent.parent)):
        resolved = Path(prefix).resolve()
        if resolved.is_relative_to("/usr") or any(resolved.is_relative_to(r) for r in roots):
            continue
        roots = [r for r in roots if not r.is_relative_to(resolved)] + [resolved]
    for root in roots:
        args += ["--ro-bind", str(root), str(root)]
    if Path(sys.prefix) != Path(sys.prefix).resolve():  # a virtual environment by a link
        args += ["--symlink", str(Path(sys.prefix).resolve()), sys.prefix]
    return args


def command(limits: PythonLimits) -> list[str]:
    return [
        limits.bwrap,
        "--unshare-all",
        "--unshare-user",
        "--uid",
        "65534",
        "--gid",
        "65534",
        "--cap-drop",
        "ALL",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--setenv",
        "HOME",
        "/tmp",
        "--setenv",
        "PATH",
        "/usr/bin:/bin",
        "--setenv",
        "LANG",
        "C.UTF-8",
        # One thread per numeric library: a grader is one task, and a thread pool per CPU
        # (OpenBLAS's default) would spend the memory limit on thread stacks.
        "--setenv",
        "OMP_NUM_THREADS",
        "1",
        "--setenv",
        "OPENBLAS_NUM_THREADS",
        "1",
        "--setenv",
        "MKL_NUM_THREADS",
        "1",
        "--hostname",
        "grader",
        *_binds(),
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--size",
        str(limits.disk_mb * MiB),
        "--tmpfs",
        "/tmp",
        "--chdir",
        "/tmp",
        "--",
        sys.executable,
        "-I",
        "-c",
        _HARNESS,
        str(limits.memory_mb * MiB),
        str(limits.disk_mb * MiB),
    ]


class Sandbox:
    """Runs python graders, at most `limits.concurrency` at a time in this event loop.

    Each call gets a fresh sandbox, but not a cold one: every call starts the sandbox of
    a later call (up to `SPARES`), whose interpreter starts while this one runs and then
    waits for its input; a call takes a waiting one when there is one. `aclose` ends
    those that were never used."""

    def __init__(self, limits: PythonLimits | None = None) -> None:
        self.limits = limits or PythonLimits.from_env()
        self._slots: asyncio.Semaphore | None = None
        self._spares: list[asyncio.subprocess.Process] = []

    def available(self) -> str | None:
        """Why no sandbox can start here, or None."""
        if shutil.which(self.limits.bwrap) is None:
            return f"bubblewrap ({self.limits.bwrap}) is not installed"
        return None

    async def run(self, source: str, sample: Any, item: Any) -> Outcome:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limits.concurrency)
        async with self._slots:
            return await self._run(source, sample, item)

    async def aclose(self) -> None:
        """End the sandboxes started ahead and not used."""
        spares, self._spares = self._spares, []
        await asyncio.gather(*(_end(process) for process in spares))

    async def _spawn(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *command(self.limits),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )

    async def _take(self) -> asyncio.subprocess.Process:
        """A started sandbox waiting for its input (one started ahead if any is alive), and
        the next one started (forking returns at once; the interpreter starts meanwhile)."""
        process = None
        while self._spares and process is None:
            spare = self._spares.pop(0)
            if spare.returncode is None:
                process = spare
            else:
                await _end(spare)
        if process is None:
            process = await self._spawn()
        if len(self._spares) < min(SPARES, self.limits.concurrency):
            try:
                self._spares.append(await self._spawn())
            except OSError:
                pass  # this call goes on; the next starts its own
        return process

    async def _run(self, source: str, sample: Any, item: Any) -> Outcome:
        why = self.available()
        if why is not None:
            return Outcome(error="server", details=why)
        payload = json.dumps({"source": source, "sample": sample, "item": item}).encode()
        try:
            process = await self._take()
        except OSError as exc:
            return Outcome(error="server", details=f"the sandbox did not start: {exc}")
        try:
            out, err = await asyncio.wait_for(
                _exchange(process, payload), timeout=self.limits.timeout_seconds
            )
        except TimeoutError:
            await _end(process)
            return Outcome(
                error="timeout",
                details=f"grade() ran past the {self.limits.timeout_seconds:g} s limit",
            )
        finally:
            if process.returncode is None:  # cancelled: leave nothing running
                _kill(process)
        return _outcome(process.returncode, out, err)


async def _exchange(process: asyncio.subprocess.Process, payload: bytes) -> tuple[bytes, bytes]:
    assert process.stdin and process.stdout and process.stderr

    async def feed() -> None:
        assert process.stdin
        try:
            process.stdin.write(payload)
            await process.stdin.drain()
            process.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the sandbox ended before reading: its exit says why

    _, out, err = await asyncio.gather(
        feed(), _read(process.stdout), _read(process.stderr, keep_tail=True)
    )
    await process.wait()
    return out, err


async def _read(stream: asyncio.StreamReader, keep_tail: bool = False) -> bytes:
    """All of a stream, keeping at most OUTPUT_LIMIT bytes (its head, or its tail)."""
    kept = b""
    while chunk := await stream.read(65536):
        kept = (kept + chunk)[-OUTPUT_LIMIT:] if keep_tail else (kept + chunk)[:OUTPUT_LIMIT]
    return kept


async def _end(process: asyncio.subprocess.Process) -> None:
    """Kill the sandbox and wait until it and its pipes are closed (so that none is left
    for the event loop to find open when it closes)."""
    _kill(process)
    streams = [s for s in (process.stdout, process.stderr) if s is not None]
    await asyncio.gather(*(_read(stream) for stream in streams))
    await process.wait()


def _kill(process: asyncio.subprocess.Process) -> None:
    """End the sandbox (bwrap and all inside: its pid namespace dies with its init) and
    close our end of its input, so that its pipes close with the event loop's help."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if process.stdin is not None and not process.stdin.is_closing():
        process.stdin.close()


def _outcome(returncode: int | None, out: bytes, err: bytes) -> Outcome:
    for line in reversed(out.decode("utf-8", "replace").splitlines()):
        try:
            answer = json.loads(line)
        except ValueError:
            continue
        if isinstance(answer, dict) and "reward" in answer:
            return Outcome(reward=float(answer["reward"]))
        if isinstance(answer, dict) and "error" in answer:
            details = str(answer.get("details") or "")
            return Outcome(error="runtime", details=details)
    text = err.decode("utf-8", "replace").strip()
    if text.startswith("bwrap:"):
        return Outcome(error="server", details=f"the sandbox did not start: {text[:500]}")
    if returncode is not None and returncode < 0:
        name = signal.Signals(-returncode).name
        why = f"the grader's process was killed by {name}"
    else:
        why = f"the grader's process exited ({returncode}) without a score"
    return Outcome(error="runtime", details=f"{why}: {text[-2000:]}" if text else why)
