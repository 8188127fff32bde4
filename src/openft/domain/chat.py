"""A chat completion request, checked before any model is touched: the messages a model
reads and the sampling it is asked for, in OpenAI's ranges. Anything out of range is a
400 that names its parameter, as OpenAI answers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from openft.domain.errors import InvalidRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
MAX_STOP = 4
MAX_N = 128  # OpenAI's own bound on `n`


@dataclass(frozen=True, slots=True)
class Caps:
    """What one request may ask of this server (OPENFT_CHAT_MAX_N, OPENFT_CHAT_MAX_TOKENS):
    an operator's bound on the work one request can queue. A request that does not say
    `max_tokens` gets `max_tokens`; one that asks for more is refused."""

    max_n: int = MAX_N
    max_tokens: int = 4096


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class Sampling:
    """How to generate: `max_tokens` None means up to the model's context; temperature 0
    is greedy (the same text every time); `seed` makes sampling repeatable."""

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    # Without `max_tokens`, a choice ends at this many tokens (or the model's context).
    ceiling: int | None = None

    @property
    def token_limit(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else self.ceiling


def _text(content: Any, param: str) -> str:
    """A message's content: a string, or OpenAI's list of text parts, as UTF-8 can carry it."""
    text = _parts(content, param)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: no tokenizer can take it
        raise InvalidRequest(
            f"The content holds a character that is not valid Unicode text at position "
            f"{exc.start}.",
            param=param,
            code="invalid_value",
        ) from None
    return text


def _parts(content: Any, param: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for n, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise InvalidRequest(
                    "Only text content parts are supported by this server's models.",
                    param=f"{param}[{n}]",
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequest("A text part needs a string 'text'.", param=f"{param}[{n}]")
            texts.append(text)
        return "".join(texts)
    raise InvalidRequest("A message's content must be a string or a list of parts.", param=param)


def chat_messages(raw: Sequence[Any]) -> list[ChatMessage]:
    """The conversation as the chat template renders it (`developer` reads as `system`)."""
    if not raw:
        raise InvalidRequest(
            "'messages' must contain at least one message.", param="messages", code="empty_array"
        )
    messages = []
    for n, item in enumerate(raw):
        if not isinstance(item, dict):
            raise InvalidRequest("Each message must be an object.", param=f"messages[{n}]")
        role = item.get("role")
        if role not in ROLES:
            raise InvalidRequest(
                f"Invalid role {role!r}: expected one of {', '.join(sorted(ROLES))}.",
                param=f"messages[{n}].role",
            )
        content = _text(item.get("content"), f"messages[{n}].content")
        messages.append(ChatMessage("system" if role == "developer" else role, content))
    return messages


# Parameters of OpenAI's chat completions that these models cannot honour: a request that
# sets one is refused (400) rather than answered as if it had not been asked.
_UNSUPPORTED = (
    "tools",
    "functions",
    "tool_choice",
    "function_call",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "audio",
    "prediction",
    "web_search_options",
)


def refuse_unsupported(extra: dict[str, Any]) -> None:
    """Refuse what openft cannot do; accept what does not change the answer (`user`,
    `metadata`, `store`, zero penalties, a text response format, text modalities)."""
    for name in _UNSUPPORTED:
        if extra.get(name) not in (None, False, [], {}):
            raise InvalidRequest(
                f"'{name}' is not supported by this server's models.",
                param=name,
                code="unsupported_parameter",
            )
    for name in ("presence_penalty", "frequency_penalty"):
        if extra.get(name) not in (None, 0):
            raise InvalidRequest(
                f"'{name}' is not supported by this server's models (only 0).",
                param=name,
                code="unsupported_parameter",
            )
    response_format = extra.get("response_format")
    if response_format not in (None, {"type": "text"}):
        raise InvalidRequest(
            "Only the 'text' response format is supported by this server's models.",
            param="response_format",
            code="unsupported_parameter",
        )
    if extra.get("modalities") not in (None, ["text"]):
        raise InvalidRequest(
            "Only text output is supported.", param="modalities", code="unsupported_parameter"
        )


def _check(ok: bool, message: str, param: str) -> None:
    if not ok:
        raise InvalidRequest(message, param=param, code="invalid_value")


def sampling(
    *,
    max_tokens: int | None = None,
    max_completion_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop: str | Sequence[str] | None = None,
    n: int | None = None,
    caps: Caps = Caps(),
) -> Sampling:
    """Check each value against OpenAI's range and this server's `caps`;
    `max_completion_tokens` (the newer name) wins over `max_tokens`."""
    limit = max_completion_tokens if max_completion_tokens is not None else max_tokens
    param = "max_completion_tokens" if max_completion_tokens is not None else "max_tokens"
    _check(limit is None or limit >= 1, f"'{param}' must be at least 1.", param)
    _check(
        limit is None or limit <= caps.max_tokens,
        f"'{param}' may be at most {caps.max_tokens} on this server.",
        param,
    )
    _check(
        temperature is None or 0 <= temperature <= 2,
        "'temperature' must be between 0 and 2.",
        "temperature",
    )
    _check(top_p is None or 0 < top_p <= 1, "'top_p' must be above 0 and at most 1.", "top_p")
    _check(
        seed is None or -(2**63) <= seed < 2**63,
        "'seed' must be a 64-bit signed integer.",
        "seed",
    )
    _check(n is None or 1 <= n <= caps.max_n, f"'n' must be between 1 and {caps.max_n}.", "n")
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    _check(len(stops) <= MAX_STOP, f"'stop' may hold at most {MAX_STOP} sequences.", "stop")
    _check(all(stops), "A stop sequence cannot be empty.", "stop")
    return Sampling(
        max_tokens=limit,
        ceiling=caps.max_tokens,
        temperature=1.0 if temperature is None else float(temperature),
        top_p=1.0 if top_p is None else float(top_p),
        seed=seed,
        stop=stops,
        n=n or 1,
    )
