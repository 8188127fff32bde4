"""Messages from the trainer subprocess to its worker: JSON lines on a pipe of their own.

The pipe's file descriptor is in OPENFT_PROTOCOL_FD, so stdout and stderr stay free for
the libraries' own output (which goes to the job's log). Kinds:

    {"kind": "message", "level": "info", "message": "..."}
    {"kind": "metrics", "data": {"step": 3, "total_steps": 30, "train_loss": ..., ...}}
    {"kind": "progress", "trained_tokens": 1200, "estimated_finish": 1795315700}
    {"kind": "checkpoint", "step": 10, "path": "/.../checkpoint-10", "metrics": {...}}
    {"kind": "done", "trained_tokens": 3600, "adapter": "/.../adapter"}
    {"kind": "stopped", "reason": "cancel" | "pause"}
    {"kind": "error", "code": "...", "message": "...", "param": null}
"""

from __future__ import annotations

import json
import os
from typing import Any, TextIO

FD_ENV = "OPENFT_PROTOCOL_FD"


class Reporter:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    @classmethod
    def from_environment(cls) -> Reporter:
        return cls(os.fdopen(int(os.environ[FD_ENV]), "w", buffering=1))

    def send(self, kind: str, **fields: Any) -> None:
        self._stream.write(json.dumps({"kind": kind, **fields}) + "\n")
        self._stream.flush()
