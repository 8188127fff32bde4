"""torchrun for one job: `python -m openft.training.launch --nproc-per-node N --log-dir DIR
SPEC.json`.

This is torchrun (`torch.distributed.run`, in this process: the elastic agent) with a
standalone rendezvous on this node and `openft.training.run SPEC.json` as every rank's
program, and one addition: when a rank fails, the agent stops the others (torchrun does)
and this module tells the worker which rank failed and why, as the job's error. torchrun
alone only prints a table to the log; a rank killed by a signal leaves no error file, and
a rank whose collective broke because another died leaves one that blames the wrong rank.

On a machine without a GPU the ranks talk over gloo on the loopback interface, one
thread each (torchrun's default for several processes per node).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import Any

from openft.training.protocol import Failed, Reporter


def torchrun_arguments(processes: int, log_dir: str, spec: str) -> list[str]:
    return [
        "--standalone",
        f"--nproc-per-node={processes}",
        "--max-restarts=0",  # a failed attempt is the worker's to report, not to repeat
        f"--log-dir={log_dir}",
        "--module",
        "openft.training.run",
        spec,
    ]


def _loopback() -> str | None:
    names = [name for _, name in socket.if_nameindex()]
    return next((name for name in names if name.startswith("lo")), None)


def _openft_part(failure: Any) -> dict[str, Any] | None:
    data = failure.error_file_data
    part = data.get("openft") if isinstance(data, dict) else None
    return part if isinstance(part, dict) else None


def cause(failures: dict[int, Any], size: int) -> Failed:
    """The job's error for the ranks that failed (torch's ProcessFailure by global rank,
    in the order torchrun saw them end; the ranks it stopped itself come last, ended by
    its SIGTERM). The first to end is the cause, unless it failed only because another
    rank had gone (its collective broke), which makes that other rank the cause."""

    def peer_lost(failure: Any) -> bool:
        part = _openft_part(failure)
        return bool(part and part.get("peer_lost"))

    order = list(failures)
    rank = min(order, key=lambda r: (peer_lost(failures[r]), order.index(r)))
    failure = failures[rank]
    who = f"rank {rank} of {size} (pid {failure.pid})"
    if failure.exitcode < 0:
        hint = "; out of memory, or killed by hand?" if failure.signal_name() == "SIGKILL" else ""
        return Failed(
            code="training_crashed",
            message=f"Training process {who} was killed by signal {-failure.exitcode} "
            f"({failure.signal_name()}{hint}). The other processes were stopped. The "
            "worker's trainer.log has every process's output.",
        )
    part = _openft_part(failure)
    if part is not None:
        failed = Failed(**{k: v for k, v in part.items() if k in Failed.model_fields})
        if failed.code in ("training_error", "out_of_memory"):
            failed.message = f"{failed.message} (training process {who})"
        return failed
    return Failed(
        code="training_crashed",
        message=f"Training process {who} exited with code {failure.exitcode} without "
        "saying why. The other processes were stopped. The worker's trainer.log has its "
        "output.",
    )


def _report(failure: Failed) -> None:
    try:
        Reporter.from_environment().send(failure)
    except OSError as exc:  # the worker is gone: nobody to tell
        print(f"could not report the failure ({exc}): {failure.message}", file=sys.stderr)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m openft.training.launch")
    parser.add_argument("--nproc-per-node", type=int, required=True)
    parser.add_argument("--log-dir", required=True)
    parser.add_argument("spec")
    options = parser.parse_args(argv)

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    loopback = _loopback()
    if loopback:
        # One node: the ranks meet on the loopback interface, never on a network
        # interface that a hostname happens to resolve to.
        os.environ.setdefault("GLOO_SOCKET_IFNAME", loopback)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        arguments = torchrun_arguments(options.nproc_per_node, options.log_dir, options.spec)
        run(parse_args(arguments))  # type: ignore[no-untyped-call]
    except ChildFailedError as exc:
        _report(cause(exc.failures, options.nproc_per_node))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
