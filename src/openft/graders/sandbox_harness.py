"""Runs inside the sandbox (as `python -I <this file's text>`): reads {source, sample,
item} as JSON on stdin, caps its own memory, runs `grade(sample, item)` and writes one
JSON line on the original stdout: {"reward": x} or {"error": kind, "details": text}.
The grader's own prints go to stderr, so they do not garble the result. Standard
library only."""

import json
import math
import numbers
import os
import resource
import sys
import traceback

PROCESSES = 256


def main() -> None:
    memory = int(sys.argv[1])
    disk = int(sys.argv[2])
    payload = json.loads(sys.stdin.buffer.read())
    result = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # print() in the grader goes to stderr
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (disk, disk))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Processes: counted in the sandbox's own user namespace. The kernel exempts a server
    # that runs as root from this limit (docs/graders.md).
    resource.setrlimit(resource.RLIMIT_NPROC, (PROCESSES, PROCESSES))
    try:
        namespace = {"__name__": "grader"}
        code = compile(payload["source"], "grader.py", "exec")
        exec(code, namespace)  # the grader's own code: this process is its sandbox
        grade = namespace.get("grade")
        if not callable(grade):
            raise TypeError("the source defines no function grade(sample, item)")
        value = grade(payload["sample"], payload["item"])
    except BaseException as exc:  # anything the grader raises is its runtime error
        lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
        kind = "memory" if isinstance(exc, MemoryError) else "runtime"
        answer = {"error": kind, "details": "".join(lines[-6:])[-4000:]}
    else:
        if not isinstance(value, numbers.Real):  # int, float, bool, numpy's numbers
            answer = {
                "error": "runtime",
                "details": f"grade() returned {type(value).__name__}, not a number",
            }
        elif not math.isfinite(float(value)):
            answer = {"error": "runtime", "details": f"grade() returned {value}"}
        else:
            answer = {"reward": float(value)}
    result.write(json.dumps(answer) + "\n")
    result.flush()


main()
