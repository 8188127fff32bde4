"""One job on several processes, as seen from one rank of it.

The launcher (torchrun) starts `openft.training.run` once per rank. Every rank trains,
evaluates and saves (a sharded model's forward and its gathering for a save are
collectives: FSDP, DeepSpeed ZeRO-3); rank 0 alone reports to the worker. This module
holds what a rank needs beyond TRL: joining the group, and proving it holds every rank
(N copies each training alone must fail, not succeed N times); agreeing on a decision
read from the control file, so that every rank stops at the same step and no collective
waits for a rank that already left; summing metrics over the ranks; the accelerate
settings of each strategy; and the cause a failing rank leaves for its launcher.
"""

from __future__ import annotations

import json
import os
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from openft.training.errors import TrainingError
from openft.training.protocol import Failed

# How long a rank waits on a collective before it gives up: a rank that died is seen by
# the launcher within a second, so this only ends a group that hangs for another reason.
COLLECTIVE_TIMEOUT = timedelta(minutes=10)
# The environment torchrun gives every rank.
LAUNCHED_BY = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


@dataclass(frozen=True, slots=True)
class Group:
    """Where this process stands: its rank among `size`, its device, and the backend
    (None when the job runs on one process, without a process group)."""

    rank: int
    size: int
    local_rank: int
    device: str
    backend: str | None

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def describe(self, strategy: str = "ddp") -> str:
        """How the job trains, for its events: "Training on cpu", or with several
        processes "Training on 2 processes (cpu, gloo)" ("(cuda, nccl, fsdp)" when the
        model is sharded)."""
        if self.size == 1:
            return f"Training on {self.device}"
        how = [self.device, str(self.backend)] + ([strategy] if strategy != "ddp" else [])
        return f"Training on {self.size} processes ({', '.join(how)})"


def _device_kind() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def join(expected: int) -> Group:
    """Join the group of `expected` processes the launcher started, and prove it holds
    them all; a TrainingError otherwise (the job fails, it never trains alone)."""
    launched = {name: os.environ.get(name) for name in LAUNCHED_BY}
    world = int(launched["WORLD_SIZE"] or 1)
    if expected == 1:
        if world != 1:
            raise TrainingError(
                "distributed_setup_failed",
                f"This job was to train on one process, but its trainer was started as one "
                f"of {world}. Start the worker with --nproc-per-node {world} instead.",
            )
        return Group(0, 1, 0, _device_kind(), None)
    if None in launched.values() or world != expected:
        raise TrainingError(
            "distributed_setup_failed",
            f"This job was to train on {expected} processes as one group, but its trainer "
            f"was started as {world} process{'es' if world != 1 else ''}"
            f"{'' if None not in launched.values() else ' without a launcher'}; it will not "
            "train as copies that each see part of the data alone. The worker starts "
            "trainers through torchrun (--nproc-per-node): check its log.",
        )
    import torch
    import torch.distributed as dist

    local_rank = int(launched["LOCAL_RANK"] or 0)
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        # NCCL between GPUs; gloo beside it for the few CPU tensors (control decisions).
        backend, name = "cuda:nccl,cpu:gloo", "nccl"
    else:
        backend, name = "gloo", "gloo"
    try:
        dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
        # The rendezvous said N; count the ranks that really answer on the group.
        present = torch.ones(1)
        dist.all_reduce(present)
        size, counted = dist.get_world_size(), int(present.item())
    except Exception as exc:
        raise TrainingError(
            "distributed_setup_failed",
            f"The {expected} training processes could not form one group: {exc}",
        ) from exc
    if size != expected or counted != expected:
        raise TrainingError(
            "distributed_setup_failed",
            f"This job was to train on {expected} processes as one group, but the group "
            f"holds {counted}.",
        )
    return Group(dist.get_rank(), size, local_rank, _device_kind(), name)


def leave(group: Group) -> None:
    """Leave the process group at the end of a job (so no rank's exit is an error)."""
    if group.size > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def agree(group: Group, value: int) -> int:
    """The largest of every rank's `value`: one decision all ranks act on together."""
    if group.size == 1:
        return value
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def barrier(group: Group) -> None:
    """Wait until every rank is here."""
    if group.size > 1:
        import torch.distributed as dist

        dist.barrier()


def total(group: Group, values: list[float]) -> list[float]:
    """Each of `values` summed over the ranks (every rank must call this together)."""
    if group.size == 1:
        return values
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return [float(v) for v in tensor.tolist()]


STRATEGIES = ("ddp", "fsdp", "deepspeed")

# ZeRO-3: parameters, gradients and optimizer states sharded over the ranks, so that a
# base model that does not fit one GPU trains on several. "auto" values are filled in by
# transformers from the training arguments (batch sizes, accumulation, precision).
ZERO3: dict[str, Any] = {
    "zero_optimization": {
        "stage": 3,
        "overlap_comm": True,
        "contiguous_gradients": True,
        # The adapter is saved whole (gathered from every rank) at each checkpoint.
        "stage3_gather_16bit_weights_on_model_save": True,
    },
    "bf16": {"enabled": "auto"},
    "train_batch_size": "auto",
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
}


def strategy_arguments(strategy: str, group: Group) -> dict[str, Any]:
    """The training arguments (transformers / accelerate) of a multi-process strategy."""
    if group.size == 1:
        return {}
    common: dict[str, Any] = {"ddp_find_unused_parameters": False}
    if group.device == "cpu":
        # accelerate's CPU mode: gloo between processes, the threads torchrun allows.
        common.update(use_cpu=True, ddp_backend="gloo")
    if strategy == "ddp":
        return common
    if strategy == "fsdp":
        # Full sharding, each transformer block wrapped on its own (transformers wraps
        # the LoRA layers for PEFT models); a full state dict gathered for saving.
        return {
            **common,
            "fsdp": "full_shard auto_wrap",
            "fsdp_config": {"state_dict_type": "FULL_STATE_DICT"},
        }
    if strategy == "deepspeed":
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise TrainingError(
                "deepspeed_not_installed",
                "This worker trains with DeepSpeed ZeRO-3 (OPENFT_DISTRIBUTED=deepspeed), but "
                "DeepSpeed is not installed on it: `pip install deepspeed` on the worker, or "
                "choose fsdp.",
            )
        return {**common, "deepspeed": ZERO3}
    raise TrainingError(
        "invalid_distributed_strategy",
        f"Unknown distributed strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}.",
    )


def watch_parent() -> None:
    """End this rank if its launcher dies: torchrun puts each rank in a session of its
    own, so a launcher killed outright (SIGKILL) would otherwise leave ranks running."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def leave_cause(failure: Failed, exc: BaseException, peer_lost: bool) -> None:
    """Write why this rank fails where its launcher looks for it (torchrun's error file,
    in the format torch's own `record` writes, with openft's code and message beside it)."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    data = {
        "message": {
            "message": f"{type(exc).__name__}: {exc}",
            "extraInfo": {
                "py_callstack": "".join(traceback.format_exception(exc)),
                "timestamp": str(int(time.time())),
            },
        },
        "openft": {**failure.model_dump(), "peer_lost": peer_lost},
    }
    with open(path, "w") as handle:
        json.dump(data, handle)


def peer_lost(exc: BaseException) -> bool:
    """Whether `exc` is this rank seeing another rank go (a collective broken under it):
    then the other rank's failure is the cause, not this one's."""
    try:
        import torch.distributed as dist

        if isinstance(exc, dist.DistError):
            return True
    except ImportError:  # pragma: no cover - torch is always there in a trainer
        pass
    text = str(exc).lower()
    return any(
        sign in text
        for sign in ("connection closed by peer", "connection reset by peer", "broken pipe")
    )
