"""Public identifiers in OpenAI's shapes: a prefix and 24 base62 characters."""

from __future__ import annotations

import functools
import secrets
import string

ALPHABET = string.digits + string.ascii_letters
ID_CHARS = 24

FILE_PREFIX = "file-"
JOB_PREFIX = "ftjob-"
EVENT_PREFIX = "ftevent-"
CHECKPOINT_PREFIX = "ftckpt_"
PROJECT_PREFIX = "proj_"
KEY_PREFIX = "sk-openft-"
KEY_ID_PREFIX = "key_"
COMPLETION_PREFIX = "chatcmpl-"

# An event id is its job's event key (16 random characters) followed by the event's
# per-job sequence number in 8 base62 digits. The id therefore *is* the keyset cursor:
# `after=<id>` decodes to (job, seq) without a secondary index, which keeps a stored
# event small and a page at any depth as cheap as the head (see docs/events.md).
EVENT_KEY_CHARS = 16
EVENT_SEQ_CHARS = ID_CHARS - EVENT_KEY_CHARS
MAX_EVENT_SEQ = len(ALPHABET) ** EVENT_SEQ_CHARS - 1


# Random bytes at or past this multiple of 62 are skipped: each character stays equally
# likely (a byte's remainder by 62 would favour the first eight).
_UNBIASED = 256 - 256 % len(ALPHABET)


def random_token(length: int = ID_CHARS) -> str:
    """Return `length` cryptographically random base62 characters."""
    # One read of the system's randomness for the token, not one per character: each
    # read is a system call, after which a busy process waits for its interpreter again
    # (the serving engine's thread holds it between a chat request's steps).
    chars: list[str] = []
    while len(chars) < length:
        chars += [
            ALPHABET[b % len(ALPHABET)] for b in secrets.token_bytes(length + 8) if b < _UNBIASED
        ]
    return "".join(chars[:length])


def new_file_id() -> str:
    return FILE_PREFIX + random_token()


def new_completion_id() -> str:
    return COMPLETION_PREFIX + random_token()


def new_job_id() -> str:
    return JOB_PREFIX + random_token()


def new_checkpoint_id() -> str:
    return CHECKPOINT_PREFIX + random_token()


def new_permission_id() -> str:
    return "cp_" + random_token()


def new_project_id() -> str:
    return PROJECT_PREFIX + random_token()


def new_event_key() -> str:
    return random_token(EVENT_KEY_CHARS)


def new_api_key() -> str:
    return KEY_PREFIX + random_token(40)


def new_webhook_id() -> str:
    return "we_" + random_token()


def new_webhook_event_id() -> str:
    return "evt_" + random_token()


def new_key_id() -> str:
    """The public name of an API key (the key itself is shown once, then only hashed)."""
    return KEY_ID_PREFIX + random_token()


# Base-62 digit pairs: an event id is made for every event a page or a stream sends, and
# two digits per step halve the work.
_PAIRS = [high + low for high in ALPHABET for low in ALPHABET]


def _base62(number: int, width: int) -> str:
    """`number` in `width` base-62 digits (zero-padded; `number` < 62**width)."""
    pairs = []
    while number:
        number, pair = divmod(number, len(_PAIRS))
        pairs.append(_PAIRS[pair])
    return "".join(reversed(pairs))[-width:].rjust(width, ALPHABET[0])


def event_id(event_key: str, seq: int) -> str:
    """The public id of event number `seq` of the job whose event key is `event_key`."""
    if not 0 < seq <= MAX_EVENT_SEQ:
        raise ValueError(f"event sequence out of range: {seq}")
    return EVENT_PREFIX + event_key + _seq_digits(seq)


@functools.lru_cache(maxsize=1 << 14)
def _seq_digits(seq: int) -> str:
    # Pages and live streams send the same recent events' ids again and again (a
    # dashboard polls the head of a log): a cached suffix is a sixth of computing it.
    return _base62(seq, EVENT_SEQ_CHARS)


def parse_event_id(value: str) -> tuple[str, int] | None:
    """Split an event id into (event key, seq); None when it is not one of ours."""
    if not value.startswith(EVENT_PREFIX) or len(value) != len(EVENT_PREFIX) + ID_CHARS:
        return None
    body = value[len(EVENT_PREFIX) :]
    if any(ch not in ALPHABET for ch in body):
        return None
    seq = 0
    for ch in body[EVENT_KEY_CHARS:]:
        seq = seq * len(ALPHABET) + ALPHABET.index(ch)
    if seq == 0:
        return None
    return body[:EVENT_KEY_CHARS], seq
