"""Stand-in for ``run.py train`` in launcher and browser tests: same argv, no torch.

Writes ``status.json`` (running, pid, heartbeat, step) every 0.2 s and a line per step to
``train.log``; SIGTERM writes state ``stopped`` and exits. It records its argv and a few
environment variables in ``fake_argv.json``. Config files steer it with plain lines:
``IGNORE_SIGTERM = True`` (only SIGKILL ends it), ``CRASH = True`` (exit 3 at once without a
final state), ``STEP_S = <seconds>``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path


def write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["train"])
    parser.add_argument("config")
    parser.add_argument("--save-path")
    parser.add_argument("--save-name")
    parser.add_argument("--use-existing-dir", action="store_true")
    parser.add_argument("--resume")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n-steps", type=int, default=10**6)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    args = parser.parse_args()

    run_dir = Path(args.resume) if args.resume else Path(args.save_path) / args.save_name
    config = Path(args.config).read_text()
    step_s = 0.2
    for line in config.splitlines():
        if line.startswith("STEP_S"):
            step_s = float(line.split("=")[1])
    env = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "PYTHONUNBUFFERED")}
    write_json(run_dir / "fake_argv.json", {"argv": sys.argv[1:], "env": env, "pgid": os.getpgrp()})
    if "CRASH = True" in config:
        print("crashing on purpose", flush=True)
        return 3

    try:
        old = json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        old = {}
    status = {
        "state": "running",
        "step": int(old.get("step", 0)) if args.resume else 0,
        "n_steps": args.n_steps,
        "pid": os.getpid(),
        "heartbeat": time.time(),
        "started": time.time(),
        "error": None,
        "device": args.device,
        "config_file": Path(args.config).name,
        "train_loss": 1.0,
        "it_per_s": 1 / step_s,
    }

    def on_term(signum: int, frame: object) -> None:
        status.update(state="stopped", heartbeat=time.time(), ended=time.time())
        write_json(run_dir / "status.json", status)
        sys.exit(0)

    if "IGNORE_SIGTERM = True" in config:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, on_term)

    with open(run_dir / "train.log", "a") as log:
        while status["step"] < args.n_steps:
            status["step"] += 1
            status["heartbeat"] = time.time()
            status["train_loss"] = 1.0 / status["step"]
            write_json(run_dir / "status.json", status)
            print(f"step {status['step']} loss {status['train_loss']:.4f}", file=log, flush=True)
            time.sleep(step_s)
    status.update(state="finished", heartbeat=time.time(), ended=time.time())
    write_json(run_dir / "status.json", status)
    return 0


if __name__ == "__main__":
    sys.exit(main())
