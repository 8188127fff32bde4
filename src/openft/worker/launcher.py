"""How a worker starts a job's trainer: the seam between the queue and where training runs.

A `Launcher` starts the trainer of one attempt and hands back a `RunningTrainer`, which
the job runner supervises: it reads the trainer's reports (JSON lines,
`openft.training.protocol`) from `reports`, stops it on a cancel or a lost lease, and
waits for its end. The runner knows nothing else of where or how the trainer runs:

- `LocalLauncher`: one process on this node, `python -m openft.training.run SPEC`; its
  reports come over a pipe it inherits.
- `TorchrunLauncher`: N processes on this node, through torchrun (standalone
  rendezvous; `python -m openft.training.launch`, which is torchrun plus naming a failed
  rank's cause). torchrun closes inherited descriptors, so the reports come through a
  named pipe in the attempt's directory, which rank 0 and the launcher open.

A cluster engine (Kubernetes, Slurm, Ray) would be a third: start the ranks where it
likes, give rank 0 a way to the report channel, stop every rank on `stop`, and name a
failed rank's cause as a `Failed` report. The queue (claims, heartbeats, events) and the
trainer stay as they are. This package never imports torch: trainers are processes.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from openft.training import protocol


class RunningTrainer(Protocol):
    """A started trainer, however many processes it is."""

    @property
    def reports(self) -> int:
        """A file descriptor to read the trainer's reports from."""
        ...

    def poll(self) -> int | None:
        """Its exit code once it has ended (every process of it), else None."""
        ...

    def wait(self) -> int: ...

    def stop(self, grace: float) -> None:
        """Ask it to stop now (SIGTERM, passed on to every rank); kill it after `grace`
        seconds if it has not."""
        ...

    def close(self) -> None:
        """Release the report channel (after `wait`)."""
        ...


class Launcher(Protocol):
    @property
    def processes(self) -> int:
        """How many processes train each job (the group size the trainer checks)."""
        ...

    def start(
        self, spec: Path, directory: Path, log: Path, env: Mapping[str, str] | None = None
    ) -> RunningTrainer:
        """Start the trainer of the spec at `spec`, in `directory` (the attempt's own),
        its output (every process's) appended to `log`, with `env` added to this
        process's environment."""
        ...


@dataclass
class TrainerProcess:
    """A trainer that is one local process tree: the trainer itself, or torchrun's agent
    with its ranks."""

    process: subprocess.Popen[bytes]
    reports: int
    # Descriptors and files of the report channel, released by `close`.
    held: list[int] = field(default_factory=list)
    fifo: Path | None = None

    def poll(self) -> int | None:
        return self.process.poll()

    def wait(self) -> int:
        return self.process.wait()

    def stop(self, grace: float) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            # torchrun's ranks watch their agent and end when it is gone.
            self.process.kill()
            self.process.wait()

    def close(self) -> None:
        _release([self.reports, *self.held], self.fifo)


def _release(fds: list[int], fifo: Path | None) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    if fifo is not None:
        fifo.unlink(missing_ok=True)


def _environment(more: Mapping[str, str] | None, **channel: str) -> dict[str, str]:
    env = {**os.environ, **(more or {}), **channel}
    # The channel is named by exactly one of these, for this trainer only.
    for name in {protocol.FD_ENV, protocol.PATH_ENV} - set(channel):
        env.pop(name, None)
    return env


@dataclass(frozen=True)
class LocalLauncher:
    """One trainer process per job, on this node."""

    processes: int = 1

    def start(
        self, spec: Path, directory: Path, log: Path, env: Mapping[str, str] | None = None
    ) -> RunningTrainer:
        read_fd, write_fd = os.pipe()
        try:
            with open(log, "ab") as output:
                process = subprocess.Popen(
                    [sys.executable, "-m", "openft.training.run", str(spec)],
                    pass_fds=(write_fd,),
                    env=_environment(env, **{protocol.FD_ENV: str(write_fd)}),
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    cwd=directory,
                )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        return TrainerProcess(process, read_fd)


@dataclass(frozen=True)
class TorchrunLauncher:
    """`processes` trainer processes per job on this node, one group (torchrun's
    standalone rendezvous: a free local port, so several workers may share a node)."""

    processes: int

    def start(
        self, spec: Path, directory: Path, log: Path, env: Mapping[str, str] | None = None
    ) -> RunningTrainer:
        fifo = directory / "reports.fifo"
        fifo.unlink(missing_ok=True)
        os.mkfifo(fifo, 0o600)
        read_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        # A writer of our own: the channel never reads as ended while no rank has opened
        # it yet; the trainer's end is its process's exit instead.
        keep = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        command = [
            sys.executable,
            "-m",
            "openft.training.launch",
            f"--nproc-per-node={self.processes}",
            f"--log-dir={directory / 'ranks'}",
            str(spec),
        ]
        try:
            with open(log, "ab") as output:
                process = subprocess.Popen(
                    command,
                    env=_environment(env, **{protocol.PATH_ENV: str(fifo)}),
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    cwd=directory,
                )
        except BaseException:
            _release([read_fd, keep], fifo)
            raise
        return TrainerProcess(process, read_fd, [keep], fifo)


def launcher_for(processes: int) -> Launcher:
    """The launcher of a worker that trains each job on `processes` processes."""
    if processes < 1:
        raise ValueError(f"a job needs at least one process, not {processes}")
    return LocalLauncher() if processes == 1 else TorchrunLauncher(processes)


def drain(reports: int) -> bytes:
    """Whatever can be read from `reports` now, without waiting."""
    chunks = []
    while select.select([reports], [], [], 0)[0]:
        try:
            chunk = os.read(reports, 1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)
