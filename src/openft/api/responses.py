"""The JSON response every route returns, serialised once with orjson.

Routes return this directly, so FastAPI does not re-validate the payload against the
documented response model (that model is for /openapi.json; the contract tests check
the bodies against OpenAI's and Nebius' published schemas instead)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson
from starlette.responses import Response, StreamingResponse

from openft.domain.entities import Blob


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def blob_response(blob: Blob, media_type: str, filename: str | None = None) -> StreamingResponse:
    """Stream a blob with its length (and, given a `filename`, as an attachment)."""
    headers = {"content-length": str(blob.size)}
    if filename is not None:
        headers["content-disposition"] = f"attachment; filename*=utf-8''{quote(filename)}"
    return StreamingResponse(blob.chunks, media_type=media_type, headers=headers)
