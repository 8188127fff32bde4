"""POST /v1/chat/completions: OpenAI's chat completions on the server's base models and
the project's fine-tuned models and checkpoints."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from openft.api.auth import CurrentPrincipal, ServicesDep
from openft.api.completions import Header, chunks, complete
from openft.api.errors import error_responses
from openft.api.responses import JSON
from openft.api.schemas import ChatCompletionRequest
from openft.api.sse import MEDIA_TYPE, STREAM_HEADERS
from openft.domain import chat
from openft.domain.ids import new_completion_id
from openft.wire import ChatCompletion

router = APIRouter(prefix="/v1/chat", tags=["chat"], responses=error_responses(401, 422))

# A client that went away before the answer was ready (nginx's name for it).
CLIENT_CLOSED = 499


@router.post(
    "/completions",
    response_model=ChatCompletion,
    operation_id="createChatCompletion",
    responses={
        **error_responses(400, 404, 503),
        200: {
            "description": "A chat.completion, or with `stream: true` chat.completion.chunk "
            "server-sent events ending with `data: [DONE]`",
            "content": {MEDIA_TYPE: {"schema": {"type": "string"}}},
        },
    },
)
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    services: ServicesDep,
    principal: CurrentPrincipal,
) -> Response:
    chat.refuse_unsupported(body.model_extra or {})
    sampling = chat.sampling(
        max_tokens=body.max_tokens,
        max_completion_tokens=body.max_completion_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stop,
        n=body.n,
        caps=services.inference.caps,
    )
    asked = (principal.project_id, body.model, body.messages, sampling)
    # On SQLite the model's lookup is read on the event loop, as every read there is
    # (`offload.read`): three requests sent together (the playground's) then reach the
    # engine together, not after three thread hops taking turns. An adapter still to be
    # unpacked, and PostgreSQL's reads, go to a thread.
    prepared = services.inference.prepare_now(*asked) if services.db.inline_reads else None
    if prepared is None:
        prepared = await run_in_threadpool(services.inference.prepare, *asked)
    head = Header(new_completion_id(), int(time.time()), body.model)
    outputs = services.inference.generate(prepared)
    if not body.stream:
        completion = await complete(outputs, head, sampling.n, request)
        return JSON(completion) if completion else Response(status_code=CLIENT_CLOSED)
    # The first output comes before the response starts, so that a model that cannot be
    # loaded, or a prompt too long for it, is an HTTP error rather than a broken stream.
    try:
        first = await anext(outputs)
    except BaseException:
        await outputs.aclose()  # type: ignore[attr-defined]
        raise
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(
        chunks(first, outputs, head, include_usage),
        media_type=MEDIA_TYPE,
        headers=STREAM_HEADERS,
    )
