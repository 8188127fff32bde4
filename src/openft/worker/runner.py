"""Runs one claimed job: prepares its inputs, supervises the trainer subprocess, and
relays what the trainer says to the server.

Events are sent in numbered batches (at most every `FLUSH_SECONDS`, or `FLUSH_EVENTS`
at a time), never one request per event; a batch is always flushed before a
checkpoint, a completion or a failure is reported, so the log reads in order.
"""

from __future__ import annotations

import contextvars
import logging
import os
import select
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from openft import archives, logs
from openft.domain import messages
from openft.domain.entities import (
    Control,
    EventDraft,
    Hyperparameters,
    JobError,
    Method,
    MethodType,
)
from openft.domain.errors import LeaseLost
from openft.domain.hyperparameters import BASE_LEARNING_RATE
from openft.training import protocol
from openft.training.spec import TrainingSpec
from openft.worker.client import KeyRefused, WorkerClient, WorkerProtocolError
from openft.worker.launcher import Launcher, LocalLauncher, RunningTrainer, drain
from openft.worker.protocol import ClaimReply, Heartbeat

log = logging.getLogger(__name__)
FLUSH_SECONDS = 0.5
FLUSH_EVENTS = 200


@dataclass(frozen=True)
class RunnerSettings:
    work_dir: Path
    heartbeat_seconds: float = 10.0
    # After a cancel or pause, how long the trainer has to stop at a step boundary
    # before it is terminated (then killed) by force.
    grace_seconds: float = 30.0
    metrics_every: int = 1
    checkpoint_every: int = 0
    learning_rate: float = BASE_LEARNING_RATE
    # Where and on how many processes each job trains (worker/launcher.py), and how
    # several processes share the model: "ddp", "fsdp" or "deepspeed" (ZeRO-3).
    launcher: Launcher = field(default_factory=LocalLauncher)
    distributed: str = "ddp"


class JobRunner:
    def __init__(
        self,
        client: WorkerClient,
        assignment: ClaimReply,
        settings: RunnerSettings,
        stop: threading.Event | None = None,
    ) -> None:
        self.client = client
        # Set when the worker shuts down: the trainer is stopped and the job left to the
        # server's recovery, which re-queues it to resume from its last checkpoint.
        self._stop = stop or threading.Event()
        self.assignment = assignment
        self.settings = settings
        self.job = assignment.job
        self.job_id: str = self.job["id"]
        self.dir = settings.work_dir / self.job_id / f"attempt-{assignment.attempt}"
        self._pending: list[EventDraft] = []
        self._batch = 0
        self._last_flush = time.monotonic()
        self._progress = Heartbeat()
        self._control: Control | None = None
        self._lease_lost = threading.Event()
        # Set by the heartbeat thread when the server refused a heartbeat for good.
        self._failure: WorkerProtocolError | None = None
        self._trainer: RunningTrainer | None = None

    # -- events --------------------------------------------------------------------------

    def _queue(self, draft: EventDraft) -> None:
        self._pending.append(draft)
        if len(self._pending) >= FLUSH_EVENTS:
            self._flush()

    def _flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        self._batch += 1
        self.client.report(self.job_id, self._batch, self._pending)
        self._pending = []

    # -- preparing -----------------------------------------------------------------------

    def _prepare(self) -> TrainingSpec:
        if self.dir.exists():
            shutil.rmtree(self.dir)
        inputs = self.dir / "inputs"
        training = self.client.download_file(
            self.job_id, self.job["training_file"], inputs / "training.jsonl"
        )
        validation = None
        if self.job["validation_file"]:
            validation = self.client.download_file(
                self.job_id, self.job["validation_file"], inputs / "validation.jsonl"
            )
        output = self.dir / "out"
        resume = None
        checkpoint = self.assignment.resume_from
        if checkpoint:
            archive = self.client.download_checkpoint(
                self.job_id, checkpoint["id"], self.dir / "resume.tar.gz"
            )
            resume = output / f"checkpoint-{checkpoint['step_number']}"
            archives.unpack(archive, resume)
            archive.unlink()
        start = None
        if self.assignment.start_from:
            archive = self.client.download_start(self.job_id, self.dir / "start.tar.gz")
            start = self.dir / "start"
            archives.unpack(archive, start)
            archive.unlink()
        method = self.job["method"]
        resolved = Method.from_dict(method)
        return TrainingSpec(
            job_id=self.job_id,
            method=MethodType(method["type"]),
            model_source=self.assignment.base_model.source,
            training_file=str(training),
            validation_file=str(validation) if validation else None,
            hyperparameters=Hyperparameters(**method[method["type"]]["hyperparameters"]),
            seed=int(self.job["seed"]),
            output_dir=str(output),
            control_file=str(self.dir / "control"),
            resume_from=str(resume) if resume else None,
            metrics_every=self.settings.metrics_every,
            checkpoint_every=self.settings.checkpoint_every,
            learning_rate=self.settings.learning_rate,
            processes=self.settings.launcher.processes,
            distributed=self.settings.distributed,
            start_adapter=str(start) if start else None,
            grader=resolved.grader,
            response_format=resolved.response_format,
        )

    # -- supervising -------------------------------------------------------------------

    def _heartbeats(self) -> None:
        """Renew the lease; pass a cancel or pause on to the trainer, by force if need be."""
        asked_at: float | None = None
        while self._trainer is not None and self._trainer.poll() is None:
            if self._stop.is_set():
                self._kill()
                return
            try:
                control = self.client.heartbeat(self.job_id, self._progress)
            except LeaseLost:
                log.warning("lost the lease on %s: stopping its trainer", self.job_id)
                self._lease_lost.set()
                self._kill()
                return
            except WorkerProtocolError as exc:  # transient trouble was already retried
                self._failure = exc
                self._kill()
                return
            if control is not None and control != self._control:
                self._control = control
                (self.dir / "control").write_text(control.value)
                asked_at = time.monotonic()
            if asked_at is not None and time.monotonic() - asked_at > self.settings.grace_seconds:
                log.warning("trainer of %s ignored %s: terminating it", self.job_id, self._control)
                self._kill()
                return
            self._stop.wait(self.settings.heartbeat_seconds if asked_at is None else 1.0)

    def _kill(self) -> None:
        if self._trainer is not None:
            # Several processes pass the signal on to their ranks first: a little longer.
            self._trainer.stop(grace=5 if self.settings.launcher.processes == 1 else 15)

    def _handle(self, message: protocol.TrainerMessage) -> bool:
        """Relay one trainer message; True once the job has been finished at the server."""
        match message:
            case protocol.Log():
                self._queue(EventDraft(message.message, message.level))
            case protocol.Metrics():
                self._queue(messages.step_metrics(message.data))
            case protocol.Progress():
                self._progress = Heartbeat(
                    trained_tokens=message.trained_tokens,
                    estimated_finish=message.estimated_finish,
                )
            case protocol.CheckpointSaved():
                self._flush()
                archive = archives.pack(
                    Path(message.path), self.dir / f"checkpoint-{message.step}.tar.gz"
                )
                self.client.add_checkpoint(self.job_id, message.step, message.metrics, archive)
                archive.unlink()
            case protocol.Done():
                self._flush()
                archive = archives.pack(Path(message.adapter), self.dir / "adapter.tar.gz")
                self.client.complete(self.job_id, message.trained_tokens, archive)
                return True
            case protocol.Stopped():
                self._flush()
                self.client.stopped(self.job_id)
                return True
            case protocol.Failed():
                self._flush()
                self.client.fail(
                    self.job_id, JobError(message.code, message.message, message.param)
                )
                return True
        return False

    def run(self) -> None:
        """Run the job to its end at the server. A call the server refuses fails the job
        at once with that cause; a lost lease ends the work with nothing to report."""
        try:
            self._run()
        except KeyRefused:
            self._kill()  # nothing can be reported with this key: stop, and say so above
            raise
        except LeaseLost:
            log.warning("lost the lease on %s: stopped working on it", self.job_id)
        except WorkerProtocolError as exc:
            self._give_up(exc)

    def _give_up(self, failure: WorkerProtocolError) -> None:
        log.error("%s fails: %s", self.job_id, failure.describe())
        self._kill()
        try:
            self.client.fail(self.job_id, failure.job_error())
        except (LeaseLost, WorkerProtocolError) as again:
            log.error(
                "could not fail %s either (%s); the server recovers it once its lease expires",
                self.job_id,
                again,
            )

    def _run(self) -> None:
        spec = self._prepare()
        spec.write(self.dir / "spec.json")
        # A reinforcement job's model graders call back through this worker's server.
        env = self.client.grader_calls(self.job_id) if spec.grader is not None else None
        trainer = self._trainer = self.settings.launcher.start(
            self.dir / "spec.json", self.dir, self.dir / "trainer.log", env
        )
        # The threads log with this one's context (the job's id).
        heartbeats = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._heartbeats,),
            name=f"heartbeat-{self.job_id}",
            daemon=True,
        )
        heartbeats.start()
        ended = threading.Event()
        output = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._log_output, ended),
            name=f"output-{self.job_id}",
            daemon=True,
        )
        # Only where the trainer's lines are logged at all (the JSON format): the text
        # format leaves them in trainer.log, as it always did.
        if logging.getLogger(logs.TRAINER_LOGGER).isEnabledFor(logging.INFO):
            output.start()
        try:
            finished = self._relay(trainer)
        except BaseException:
            self._kill()
            raise
        finally:
            code = trainer.wait()
            trainer.close()
            ended.set()
            heartbeats.join(timeout=self.settings.heartbeat_seconds + 5)
            if output.is_alive():
                output.join(timeout=5)
            self._clean_up()
        if self._failure is not None:
            raise self._failure
        if finished or self._lease_lost.is_set() or self._stop.is_set():
            return
        self._flush()
        if self._control is not None:
            # Stopped by force: a pause resumes from the last checkpoint it reached.
            self.client.stopped(self.job_id)
            return
        tail = (self.dir / "trainer.log").read_text(errors="replace")[-2000:]
        log.error("trainer of %s exited with %s:\n%s", self.job_id, code, tail)
        self.client.fail(
            self.job_id,
            JobError(
                "training_crashed",
                f"The training process exited unexpectedly (exit code {code}"
                f"{', killed by the system: out of memory?' if code in (-9, 137) else ''}). "
                "Try a smaller batch_size or max_length; the worker's log has the details.",
            ),
        )

    def _log_output(self, ended: threading.Event) -> None:
        """Log the trainer's output (its and its libraries' prints, warnings, progress
        bars), line by line, as trainer.log grows, until the trainer has ended."""
        logger = logging.getLogger(logs.TRAINER_LOGGER)
        buffer = b""
        with open(self.dir / "trainer.log", "rb") as output:
            while True:
                last = ended.is_set()  # read once more after the end: its last lines
                chunk = output.read(1 << 16)
                *lines, buffer = (buffer + chunk).replace(b"\r", b"\n").split(b"\n")
                for line in lines:
                    if text := line.decode(errors="replace").strip():
                        logger.info("%s", text)
                if not chunk:
                    if last:
                        break
                    ended.wait(0.5)
        if text := buffer.decode(errors="replace").strip():
            logger.info("%s", text)

    def _clean_up(self) -> None:
        """Drop the attempt's inputs and outputs (the server has what it needs); keep its
        spec and the trainer's log for diagnosis."""
        for name in ("inputs", "out"):
            shutil.rmtree(self.dir / name, ignore_errors=True)

    def _relay(self, trainer: RunningTrainer) -> bool:
        """Handle the trainer's reports until one finishes the job (True), or until the
        trainer has ended (its channel closed, or its processes gone) without one."""
        buffer = b""
        while True:
            ready, _, _ = select.select([trainer.reports], [], [], FLUSH_SECONDS)
            if ready:
                try:
                    chunk = os.read(trainer.reports, 1 << 16)
                except BlockingIOError:
                    continue
                ended = not chunk
            elif trainer.poll() is not None:
                # Ended: what it wrote just before is still to be read.
                chunk, ended = drain(trainer.reports), True
            else:
                chunk, ended = b"", False
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.strip() and self._handle(protocol.parse(line)):
                    return True
            if ended:
                return False
            if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
                self._flush()
