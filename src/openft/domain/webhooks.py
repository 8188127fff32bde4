"""Webhooks as OpenAI sends them (Standard Webhooks): the events, their payload, the
signature the official SDKs' `client.webhooks.unwrap` verifies, and the retry rule."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets

from openft.domain.entities import JobStatus

SECRET_PREFIX = "whsec_"
EVENT_TYPES = {
    JobStatus.SUCCEEDED: "fine_tuning.job.succeeded",
    JobStatus.FAILED: "fine_tuning.job.failed",
    JobStatus.CANCELLED: "fine_tuning.job.cancelled",
}
# A delivery not answered with a 2xx is tried again after 2, 4, 8, … seconds (at most an
# hour apart), MAX_ATTEMPTS times in all (about a day), then given up.
MAX_ATTEMPTS = 16
MAX_BACKOFF_SECONDS = 3600


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def payload(event_id: str, event_type: str, job_id: str, created_at: int) -> str:
    body = {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created_at": created_at,
        "data": {"id": job_id},
    }
    return json.dumps(body, separators=(",", ":"))


def signature(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed by the secret's bytes."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.{body}".encode()
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def retry_after(attempts: int, base_seconds: float) -> float | None:
    """Seconds until the next try after `attempts` failed ones; None: give up."""
    if attempts >= MAX_ATTEMPTS:
        return None
    return float(min(MAX_BACKOFF_SECONDS, base_seconds * 2 ** (attempts - 1)))
