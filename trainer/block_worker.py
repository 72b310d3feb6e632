"""One worker of a ``run.py predict|segment`` job: ``python -m trainer.block_worker OUTPUT``.

Local workers (``--workers N``) and Slurm array tasks (``--backend slurm --jobs N``) run this
same command. It reads the job file in ``OUTPUT`` (``trainer.block_claims``), then claims and
does blocks until every step is done. A Slurm array task takes its name and place from
``SLURM_ARRAY_JOB_ID``, ``SLURM_ARRAY_TASK_ID`` and ``SLURM_ARRAY_TASK_COUNT``.

Exit status: 0 all blocks done; 1 a block failed or the job cannot run (one line on stderr);
143 stopped by SIGTERM (``scancel``, a local stop: the worker's file says ``stopped``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from trainer.block_claims import (
    HEARTBEAT_S,
    LEASE_TIMEOUT_S,
    BlockWorker,
    JobError,
    job_folder,
    read_job,
)


def _identity(args: argparse.Namespace) -> tuple[str, int, int]:
    env = os.environ
    if args.worker is None and "SLURM_ARRAY_TASK_ID" in env:
        task = int(env["SLURM_ARRAY_TASK_ID"])
        name = f"slurm-{env.get('SLURM_ARRAY_JOB_ID', env.get('SLURM_JOB_ID', '0'))}_{task}"
        return name, task, int(env.get("SLURM_ARRAY_TASK_COUNT", "1"))
    name = args.worker or f"{os.uname().nodename}-{os.getpid()}"
    return name, args.rank, args.size


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one worker; see the module's doc."""
    p = argparse.ArgumentParser(prog="python -m trainer.block_worker")
    p.add_argument("output", help="the job's output folder (holding .voxelboard-job)")
    p.add_argument("--worker", help="this worker's name (default: Slurm's task, else host-pid)")
    p.add_argument("--rank", type=int, default=0, help="this worker's place, 0 .. SIZE-1")
    p.add_argument("--size", type=int, default=1, help="how many workers share the job")
    p.add_argument("--device", default=None, help="auto | cpu | cuda (default: the job's)")
    p.add_argument("--lease-timeout", type=float, default=LEASE_TIMEOUT_S)
    p.add_argument("--heartbeat", type=float, default=HEARTBEAT_S)
    args = p.parse_args(argv)
    folder = job_folder(args.output)
    job = read_job(folder)
    if job is None:
        print(f"block_worker: {folder}: no job file; submit the job with run.py first",
              file=sys.stderr)  # fmt: skip
        return 1
    name, rank, size = _identity(args)
    # scancel and a local stop send SIGTERM: leave through the worker's exit (state stopped)
    signal.signal(signal.SIGTERM, _stop)
    device = args.device or job.get("device")
    from trainer.prediction_store import PredictionError

    try:
        with BlockWorker(folder, name, rank, size, lease_timeout=args.lease_timeout,
                         heartbeat=args.heartbeat) as worker:  # fmt: skip
            last = job["steps"][-1]["name"]
            if worker.is_done(last, 0):  # a late task: leave before loading anything
                did = 0
            elif job["kind"] == "predict":
                from trainer.distributed_predict import predict_worker

                did = predict_worker(job, worker, device)
            else:
                from trainer.distributed_segment import segment_worker

                did = segment_worker(job, worker)
    except (JobError, PredictionError, FileNotFoundError) as e:
        print(f"block_worker {name}: {e}", file=sys.stderr)
        return 1
    print(f"block_worker {name}: done ({did} blocks here)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
