"""`make demo`: the whole control-plane flow, offline, on the embedded default (SQLite).

Starts `openft serve` on a free loopback port with a fresh data directory, creates an
API key, and with the official `openai` SDK uploads a small chat dataset, creates a
fine-tuning job, follows its events until it is queued, and shows the pages of events
exactly as a client sees them. (Training itself arrives with the worker.)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SAMPLE = [
    ("What is the capital of France?", "Paris."),
    ("What is 2 + 2?", "4."),
    ("Name a primary colour.", "Red."),
    ("What is the boiling point of water at sea level?", "100 degrees Celsius."),
    ("Who wrote Hamlet?", "William Shakespeare."),
    ("What is the largest planet?", "Jupiter."),
    ("How many legs does a spider have?", "Eight."),
    ("What gas do plants absorb?", "Carbon dioxide."),
    ("What is the square root of 81?", "9."),
    ("Which ocean is the largest?", "The Pacific."),
    ("What language is spoken in Brazil?", "Portuguese."),
    ("How many days are in a leap year?", "366."),
]


def sample_dataset() -> bytes:
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "Answer briefly."},
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
        for question, answer in SAMPLE
    ]
    return ("\n".join(lines) + "\n").encode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _openft(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "openft.cli.main", *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def main() -> None:
    from openai import OpenAI

    data_dir = Path(os.environ.get("OPENFT_DEMO_DIR") or tempfile.mkdtemp(prefix="openft-demo-"))
    port = _free_port()
    key = _openft("keys", "create", "--project", "demo", "--data-dir", str(data_dir))
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "openft.cli.main",
            "serve",
            "--port",
            str(port),
            "--no-access-log",
            "--data-dir",
            str(data_dir),
            "--model",
            "tiny-demo=./models/tiny-demo",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        print(f"openft is serving on {base} (data in {data_dir})")
        client = OpenAI(base_url=f"{base}/v1", api_key=key)
        print("models:", [m.id for m in client.models.list()])
        upload = client.files.create(file=("sample.jsonl", sample_dataset()), purpose="fine-tune")
        print(f"uploaded {upload.filename}: {upload.id}, {upload.bytes} bytes")
        job = client.fine_tuning.jobs.create(
            model="tiny-demo",
            training_file=upload.id,
            suffix="demo",
            metadata={"source": "make demo"},
        )
        print(f"created {job.id}: {job.status}")
        while job.status == "validating_files":
            time.sleep(0.1)
            job = client.fine_tuning.jobs.retrieve(job.id)
        print(f"job {job.id} is {job.status}")
        print("events, newest first (as client.fine_tuning.jobs.list_events returns them):")
        for event in client.fine_tuning.jobs.list_events(job.id, limit=2):
            print(f"  {event.id}  {event.level:5}  {event.message}")
        cancelled = client.fine_tuning.jobs.cancel(job.id)
        print(
            f"cancelled: {cancelled.status}; newest event: "
            f"{client.fine_tuning.jobs.list_events(job.id, limit=1).data[0].message}"
        )
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
