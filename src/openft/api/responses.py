"""The JSON response every route returns, serialised once with orjson.

Routes return this directly, so FastAPI does not re-validate the payload against the
documented response model (that model is for /openapi.json; the contract tests check
the bodies against OpenAI's and Nebius' published schemas instead)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
