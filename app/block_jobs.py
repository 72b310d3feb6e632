"""Starting the workers of a distributed predict or segment job, and waiting for them.

The thin shell over ``trainer.block_claims``: ``start_local`` runs N ``python -m
trainer.block_worker OUTPUT`` processes on this machine (one GPU each where there are GPUs,
through ``CUDA_VISIBLE_DEVICES``); ``submit_array`` submits the same command as a Slurm job
array (``sbatch --array=0-N-1``); ``wait_local`` and ``wait_array`` follow the job through
``trainer.jobs.job_progress`` until it is complete or nobody is left to work on it;
``stop_job`` and ``resume_argv`` are a page's Stop and Resume (of a one-process job,
``trainer.process_job``, too), ``task_states`` its per-task Slurm states.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trainer.block_claims import job_folder, read_job, write_job
from trainer.jobs import job_progress

REPO = Path(__file__).resolve().parents[1]

Show = Callable[[dict[str, Any]], None]


def cap_jobs(asked: int, steps: Sequence[Mapping[str, Any]]) -> tuple[int, str | None]:
    """``asked`` workers capped at the most blocks any step has, and the note saying so."""
    most = max((int(s["blocks"]) for s in steps), default=1)
    if asked > most:
        return most, f"{asked} workers for {most} blocks: {most} are started (one per block)"
    return max(asked, 1), None


def worker_argv(output: str | os.PathLike, device: str | None) -> list[str]:
    """The worker command (without its name and place)."""
    argv = [sys.executable, "-m", "trainer.block_worker", str(Path(output).resolve())]
    return [*argv, "--device", device] if device else argv


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def worker_plans(output: str | os.PathLike, n: int, device: str | None, gpus: int,
                 tag: int) -> list[tuple[str, list[str], dict[str, str]]]:  # fmt: skip
    """Each of ``n`` local workers' name, command and environment additions: one GPU each,
    round robin over ``gpus`` (``CUDA_VISIBLE_DEVICES``, ``--device cuda``) when ``device``
    asks for CUDA or is ``auto``/unset and there are GPUs, else the CPU (``--device cpu``
    for ``auto``/unset, ``device`` as given otherwise).

    Worker K is named ``local-K-TAG`` (``start_local``'s TAG: its pid, so a resubmission's
    names are new).

    Example:
        >>> [env for _, _, env in worker_plans("p.zarr", 3, None, gpus=2, tag=7)]
        [{'CUDA_VISIBLE_DEVICES': '0'}, {'CUDA_VISIBLE_DEVICES': '1'}, {'CUDA_VISIBLE_DEVICES': '0'}]
    """
    wants_gpu = device in (None, "auto") or str(device).startswith("cuda")
    plans = []
    for k in range(n):
        env: dict[str, str] = {}
        dev = device
        if gpus and wants_gpu:
            env["CUDA_VISIBLE_DEVICES"] = str(k % gpus)
            dev = "cuda"
        elif device in (None, "auto"):
            dev = "cpu"
        name = f"local-{k}-{tag}"
        argv = [*worker_argv(output, dev), "--worker", name, "--rank", str(k), "--size", str(n)]
        plans.append((name, argv, env))
    return plans


def start_local(output: str | os.PathLike, n: int, device: str | None = None,
                log_dir: Path | None = None) -> list[subprocess.Popen]:  # fmt: skip
    """Start ``n`` local workers as ``worker_plans`` says: one GPU each (round robin) when
    ``device`` asks for CUDA or is ``auto``/unset on a machine with GPUs, else on the CPU.

    Worker K is named ``local-K-PID`` (PID: this process's, so a resubmission's names are
    new); its stderr goes to ``log_dir/NAME.log`` (default the job folder).
    """
    wants_gpu = device in (None, "auto") or str(device).startswith("cuda")
    gpus = _gpu_count() if wants_gpu else 0
    log_dir = log_dir or job_folder(output)
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    procs = []
    for name, argv, extra in worker_plans(output, n, device, gpus, os.getpid()):
        env = {**os.environ, "PYTHONPATH": path, **extra}
        log = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        try:
            procs.append(subprocess.Popen(argv, env=env, cwd=REPO, stdout=log, stderr=log,
                                          stdin=subprocess.DEVNULL))  # fmt: skip
        finally:
            log.close()
    return procs


def stop_local(procs: Sequence[subprocess.Popen], grace_s: float = 10.0) -> None:
    """SIGTERM every worker still running, SIGKILL after ``grace_s``, and reap them."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_local(output: str | os.PathLike, procs: Sequence[subprocess.Popen],
               show: Show | None = None, poll_s: float = 0.5) -> dict[str, Any]:  # fmt: skip
    """Follow the job until every worker has ended (polling reaps them, so a killed worker
    is seen dead at once); returns the last progress. Stops the workers on any exception
    (Ctrl-C included)."""
    try:
        while any(p.poll() is None for p in procs):
            progress = job_progress(output)
            if show and progress:
                show(progress)
            time.sleep(poll_s)
    except BaseException:
        stop_local(procs)
        raise
    progress = job_progress(output) or {}
    if show and progress:
        show(progress)
    return progress


def record_backend(output: str | os.PathLike, **fields: Any) -> None:
    """Add ``fields`` (e.g. the Slurm job id) to the job file (its one writer: the
    submitting command)."""
    folder = job_folder(output)
    job = read_job(folder) or {}
    write_job(folder, {**job, **fields})


def submit_array(output: str | os.PathLike, n: int, resources: Any, device: str | None,
                 slurm: Any, name: str) -> str:  # fmt: skip
    """Submit ``n`` array tasks running the worker; returns the array's job id.

    Raises:
        app.slurm.SlurmError: sbatch refused or is missing.
    """
    from app.slurm import batch_script

    folder = job_folder(output)
    env = {"PYTHONPATH": str(REPO)}
    comment = f"VoxelBoard {name}: array task of {Path(output).name}"
    script = batch_script(worker_argv(output, device), resources, env=env, comment=comment)
    path = folder / "slurm-array.sh"
    path.write_text(script)
    options = [f"--array=0-{n - 1}", f"--job-name=vb-{name}", f"--chdir={REPO}",
               f"--output={folder / 'slurm-%A_%a.log'}"]  # fmt: skip
    return slurm.submit(path, options)


def wait_array(output: str | os.PathLike, job_id: str, n: int, slurm: Any,
               show: Show | None = None, poll_s: float = 2.0,
               grace_s: float = 60.0) -> dict[str, Any]:  # fmt: skip
    """Follow the job until every array task has ended (once the job is complete, for at
    most ``grace_s`` more: the tasks only have to notice and leave)."""
    tasks = [f"{job_id}_{k}" for k in range(n)]
    complete_at = None
    while True:
        progress = job_progress(output) or {}
        if show and progress:
            show(progress)
        if progress.get("complete") and complete_at is None:
            complete_at = time.monotonic()
        states = slurm.jobs(tasks)
        ended = [s for s in states.values() if s.run_state not in ("queued", "running", None)]
        if len(ended) == n or (complete_at and time.monotonic() - complete_at > grace_s):
            return job_progress(output) or {}
        time.sleep(poll_s)


def describe(progress: Mapping[str, Any]) -> str:
    """One progress line: the step, blocks done, throughput, ETA, retries and failures."""
    step = next((s for s in progress["steps"] if s["done"] < s["total"]), progress["steps"][-1])
    b = progress["blocks"]
    rate = progress.get("throughput")
    eta = progress.get("eta_s")
    text = (f"{step['name']}: block {step['done']}/{step['total']}, all steps "
            f"{b['done']}/{b['total']}")  # fmt: skip
    if rate:
        text += f", {rate:.2f} blocks/s"
    if eta is not None:
        text += f", ETA {eta:.0f} s"
    if b["retried"] or b["failed"]:
        text += f", {b['retried']} retried, {b['failed']} failed"
    return text


def failure_lines(output: str | os.PathLike) -> list[str]:
    """What the workers said before they failed (from their files), one line each."""
    progress = job_progress(output) or {}
    return [f"{w['worker']}: {w['error']}" for w in progress.get("workers", []) if w.get("error")]


def stop_job(output: str | os.PathLike, slurm: Any = None) -> list[str]:
    """Stop a job's workers (for a page's Stop button): ``scancel`` of its Slurm array, or
    SIGTERM to its running workers on this host. Blocks being worked on stay claimed by dead
    holders and are taken over on resumption (``resume_argv``). Returns what was stopped.

    Raises:
        app.slurm.SlurmError: scancel failed.
    """
    progress = job_progress(output) or {}
    if progress.get("backend") == "slurm" and progress.get("slurm_job_id"):
        from app.slurm import Slurm

        (slurm or Slurm()).cancel(str(progress["slurm_job_id"]))
        return [f"Slurm job {progress['slurm_job_id']}"]
    stopped = []
    command = progress.get("command") if progress.get("single") else None
    for w in progress.get("workers", []):
        if w["state"] in ("running", "waiting") and w["host"] == socket.gethostname():
            pid = w.get("pid")
            if isinstance(pid, int) and is_worker_of(pid, output, command):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM)
                    stopped.append(w["worker"])
    return stopped


def is_worker_of(pid: int, output: str | os.PathLike,
                 command: Sequence[str] | None = None) -> bool:  # fmt: skip
    """Whether process ``pid`` is a block worker (``trainer.block_worker``) of ``output``,
    or, given the ``command`` of a one-process job (``trainer.process_job``), that
    ``run.py predict|segment`` command itself: a worker file names a pid, and Stop signals
    only a process that is what the file says (not whatever process has that pid now, nor
    one a forged file names)."""
    import psutil

    try:
        argv = psutil.Process(pid).cmdline()
    except (psutil.Error, OSError):
        return False
    if command is not None:
        ours = (
            len(argv) > 2 and Path(argv[1]).name == "run.py" and argv[2] in ("predict", "segment")
        )
        return ours and argv[1:] == [str(a) for a in command[1:]]
    want = str(Path(output).resolve())
    return "trainer.block_worker" in argv and want in argv


def resume_argv(output: str | os.PathLike) -> list[str] | None:
    """The command that submitted the job (run again in the job's ``cwd``, it does only
    what is missing)."""
    job = read_job(job_folder(output))
    return list(job["command"]) if job and job.get("command") else None


def task_states(output: str | os.PathLike, slurm: Any = None) -> dict[str, str]:
    """Slurm's state of each array task of the job (``{'123_0': 'RUNNING', ...}``); empty
    for a local job or tasks Slurm no longer knows.

    Raises:
        app.slurm.SlurmError: squeue failed.
    """
    job = read_job(job_folder(output)) or {}
    if job.get("backend") != "slurm" or not job.get("slurm_job_id"):
        return {}
    from app.slurm import Slurm

    tasks = [f"{job['slurm_job_id']}_{k}" for k in range(int(job.get("workers") or 1))]
    return {k: v.state for k, v in (slurm or Slurm()).jobs(tasks).items()}
