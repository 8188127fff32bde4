"""Server and worker settings from flags and OPENFT_* environment variables
(pydantic-settings): plain values only. The composition root (`openft.wiring`) builds
what each part needs from them. Nothing is read at import time: the CLI builds a
`Settings` when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from openft.domain.entities import BaseModel

MiB = 1024 * 1024


def parse_models(specs: list[str]) -> list[BaseModel]:
    """Parse `NAME=SOURCE` items (SOURCE: a Hugging Face id or a local directory)."""
    models: dict[str, BaseModel] = {}
    for spec in specs:
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, sep, source = item.partition("=")
            if not sep or not name.strip() or not source.strip():
                raise ValueError(f"invalid model {item!r}: expected NAME=SOURCE")
            models[name.strip()] = BaseModel(name.strip(), source.strip())
    return list(models.values())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPENFT_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    # host:port where `/metrics` is also served without a key, for a Prometheus scraper
    # (keep it off the public network); unset: only the API's `/metrics`, admin keys only.
    metrics_address: str | None = None
    # "text" (the default) or "json": one JSON object per line, for a log shipper.
    log_format: Literal["text", "json"] = "text"
    # The SQLite database (unless `database_url` names another) and the blobs live here.
    data_dir: Path = Path("openft-data")
    database_url: str | None = None
    # Where blobs (uploaded files, checkpoints, adapters, results) live: the data directory
    # by default, or s3://BUCKET[/PREFIX] (endpoint and credentials from the AWS_*
    # variables), which every API replica and worker then shares.
    blob_url: str | None = None
    # Adapters and checkpoints unpacked for inference are cached locally up to this size.
    cache_mb: int = Field(default=10240, ge=1)
    # Comma-separated NAME=SOURCE base models; `--model` flags add to these.
    models: str = ""
    max_upload_bytes: int = Field(default=512 * MiB, gt=0)
    # Every other request body (JSON: chat prompts, job creation, worker reports).
    max_request_bytes: int = Field(default=8 * MiB, gt=0)
    # What one chat completion may ask for: choices (`n`), and tokens per choice (also
    # the length of a choice that does not say `max_tokens`).
    chat_max_n: int = Field(default=128, ge=1, le=128)
    chat_max_tokens: int = Field(default=4096, ge=1)
    # Followers of a job's event stream: how often its feed looks for events that another
    # process wrote (this process's own wake it at once), and how often an idle stream
    # sends a keep-alive comment.
    stream_poll_seconds: float = Field(default=1.0, gt=0)
    stream_keepalive_seconds: float = Field(default=15.0, gt=0)
    # Webhook deliveries: how often each server looks for due ones, and the first wait
    # before a failed one is tried again (doubling each time, at most an hour).
    webhook_poll_seconds: float = Field(default=1.0, gt=0)
    webhook_retry_seconds: float = Field(default=2.0, gt=0)
    # Webhooks reach public addresses only; these host names and networks (CIDRs, comma
    # separated) are allowed besides: internal receivers an operator trusts.
    webhook_allowed_hosts: str = ""
    # Each try of a delivery ends within this many seconds, answer read or not, and this
    # many are sent at once, so that a slow receiver holds up no other.
    webhook_try_seconds: float = Field(default=10.0, gt=0, lt=60)
    webhook_concurrency: int = Field(default=16, ge=1)
    # How long a process trusts a key it verified: a revoked key works at most this long.
    key_cache_seconds: float = Field(default=10.0, ge=0)
    # OpenAI requires at least 10 training examples; smaller files fail validation.
    min_examples: int = Field(default=10, ge=1)
    # A job still `validating_files` this long after its last change is validated again.
    revalidate_after_seconds: int = Field(default=30, ge=1)
    # A running job whose worker has been silent this long is recovered.
    heartbeat_timeout_seconds: int = Field(default=60, ge=1)
    # How many times a job may be started before a lost worker fails it.
    max_attempts: int = Field(default=3, ge=1)
    # A job keeps its newest checkpoints only (OpenAI: those of the last three epochs).
    keep_checkpoints: int = Field(default=3, ge=1)
    # Chat completions: "local" runs models in this process (transformers + peft, the
    # train extra), "vllm" forwards to the vLLM server at `vllm_url`, "none" answers 503.
    serve_engine: Literal["local", "vllm", "none"] = "local"
    # The local engine unloads least recently used adapters and base models beyond this.
    serve_memory_mb: int = Field(default=16384, ge=1)
    vllm_url: str | None = None
    # Worker side (the embedded worker of `serve`, and `openft worker`):
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    checkpoint_every: int = Field(default=0, ge=0)  # steps; 0: at the end of each epoch
    metrics_every: int = Field(default=1, ge=1)  # steps between metrics events
    work_dir: Path | None = None  # default: <data dir>/work
    # Processes that train each job together on this node (torchrun beyond 1, one per
    # GPU), and how they share the model: a copy each (ddp), or sharded (fsdp, or
    # deepspeed: ZeRO-3) for a base model that does not fit one GPU. docs/workers.md.
    nproc_per_node: int = Field(default=1, ge=1)
    distributed: Literal["ddp", "fsdp", "deepspeed"] = "ddp"

    # Python graders (docs/graders.md): each call's wall-clock, memory and disk limits in
    # its sandbox (OpenAI's: 2 minutes, 2 GB), and how many sandboxes a process runs at
    # once (default: one per CPU). The graders read these variables themselves (the
    # trainer grades without this object); they are here so that a bad value stops
    # `openft serve` at start.
    grader_python_timeout_seconds: float = Field(default=120.0, gt=0)
    grader_python_memory_mb: int = Field(default=2048, ge=64)
    grader_python_disk_mb: int = Field(default=1024, ge=1)
    grader_concurrency: int | None = Field(default=None, ge=1)

    def base_models(self, extra: list[str] | None = None) -> list[BaseModel]:
        return parse_models([self.models, *(extra or [])])
