"""Messages from the trainer subprocess to its worker: one JSON object per line on a pipe
of their own, each a class below told apart by its `kind`.

The pipe's file descriptor is in OPENFT_PROTOCOL_FD, so stdout and stderr stay free for
the libraries' own output (which goes to the job's log). A trainer started through a
launcher that closes inherited descriptors (torchrun does) finds a named pipe's path in
OPENFT_PROTOCOL_PATH instead. Of a job's several processes, rank 0 alone reports.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal, TextIO

from pydantic import BaseModel, Field, TypeAdapter

from openft.domain.entities import Control, EventLevel

FD_ENV = "OPENFT_PROTOCOL_FD"
PATH_ENV = "OPENFT_PROTOCOL_PATH"
# Where a reinforcement job's model graders call, and with which headers (JSON: {"url",
# "headers"}; the worker's key among them, so in the environment, never in the spec file).
GRADER_CALL_ENV = "OPENFT_GRADER_CALL"


class Log(BaseModel):
    """A status message for the job's events."""

    kind: Literal["message"] = "message"
    level: EventLevel = EventLevel.INFO
    message: str


class Metrics(BaseModel):
    """One step's metrics: `step`, `total_steps`, `train_loss`, … (see domain.messages)."""

    kind: Literal["metrics"] = "metrics"
    data: dict[str, Any]


class Progress(BaseModel):
    kind: Literal["progress"] = "progress"
    trained_tokens: int
    estimated_finish: int


class CheckpointSaved(BaseModel):
    kind: Literal["checkpoint"] = "checkpoint"
    step: int
    path: str
    metrics: dict[str, float]


class Done(BaseModel):
    kind: Literal["done"] = "done"
    trained_tokens: int
    adapter: str


class Stopped(BaseModel):
    """Training stopped at a step boundary as the worker's control file asked."""

    kind: Literal["stopped"] = "stopped"
    reason: Control


class Failed(BaseModel):
    kind: Literal["error"] = "error"
    code: str
    message: str
    param: str | None = None


TrainerMessage = Annotated[
    Log | Metrics | Progress | CheckpointSaved | Done | Stopped | Failed,
    Field(discriminator="kind"),
]
_MESSAGE: TypeAdapter[TrainerMessage] = TypeAdapter(TrainerMessage)


def parse(line: bytes) -> TrainerMessage:
    return _MESSAGE.validate_json(line)


class Reporter:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    @classmethod
    def from_environment(cls) -> Reporter:
        if FD_ENV in os.environ:
            return cls(os.fdopen(int(os.environ[FD_ENV]), "w", buffering=1))
        # A named pipe the worker reads: opened without waiting, so that a worker that
        # is gone is an error (ENXIO) here, never a trainer blocked for ever.
        fd = os.open(os.environ[PATH_ENV], os.O_WRONLY | os.O_NONBLOCK)
        os.set_blocking(fd, True)
        return cls(os.fdopen(fd, "w", buffering=1))

    @classmethod
    def silent(cls) -> Reporter:
        """The reporter of every rank but rank 0: it says nothing."""
        return cls(open(os.devnull, "w"))

    def send(self, message: TrainerMessage) -> None:
        self._stream.write(message.model_dump_json() + "\n")
        self._stream.flush()
