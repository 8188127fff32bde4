"""Model graders' calls from the trainer: a reinforcement job's `score_model` and
`label_model` graders run on openft's own chat completions, as the job's project, through
the server the worker answers to (`POST /v1/worker/jobs/{job id}/grader/calls` with the
worker's key: the route checks that this worker holds the job, and calls exactly the
models the job's project may call).

The worker hands the trainer where and how to call in one environment variable (never in
the spec file on disk, since it holds the worker's key)."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

from openft.graders import ModelCallError
from openft.training.protocol import GRADER_CALL_ENV

# A grader model's answer can take a while on a busy server (the engine's fair turns).
TIMEOUT_SECONDS = 300.0


class ServerModels:
    """A `ModelCaller` over the worker's server (see the module's docstring)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self._url = url
        self._headers = headers

    @classmethod
    def from_environment(cls) -> ServerModels | None:
        raw = os.environ.get(GRADER_CALL_ENV)
        if not raw:
            return None
        found = json.loads(raw)
        return cls(found["url"], found["headers"])

    async def __call__(
        self,
        model: str,
        messages: list[dict[str, Any]],
        sampling: dict[str, Any],
        response_format: dict[str, Any] | None,
    ) -> tuple[str, dict[str, Any]]:
        body = {
            "model": model,
            "messages": messages,
            "sampling": sampling,
            "response_format": response_format,
        }
        # A client per call: grade_batch runs each batch in an event loop of its own.
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS) as client:
                response = await client.post(self._url, json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise ModelCallError(f"{model}: the server could not be reached: {exc}") from None
        if response.status_code != 200:
            raise ModelCallError(f"{model}: {_error_message(response)}")
        answer = response.json()
        return str(answer["text"]), dict(answer["usage"])


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"
