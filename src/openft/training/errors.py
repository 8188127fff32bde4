"""The one exception a trainer raises on purpose: a failure the job reports as it is
(its `error.code`, a message saying what to do, and the parameter at fault)."""

from __future__ import annotations


class TrainingError(Exception):
    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param
