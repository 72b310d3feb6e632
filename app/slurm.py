"""Slurm for the launcher: batch scripts, and sbatch, squeue, sacct and scancel without a shell.

The pure half builds and checks things: ``resources_from`` validates the resource request
(partition, account, GPUs, CPUs, memory, time limit) and merges the launch form, the
config's ``slurm`` section and the dashboard defaults; ``batch_script`` writes the script
text; ``parse_sbatch``, ``parse_squeue`` and ``parse_sacct`` read the tools' output;
``run_state`` (``trainer.runs.job_run_state``, owned by the launcher record's module) maps
a Slurm job state to a run state. The ``Slurm`` class is the thin shell
that runs the commands.

Slurm keeps a finished job in ``squeue --states=all`` only for ``MinJobAge`` seconds (300 by
default); after that only ``sacct`` (which needs slurmdbd) knows it. ``Slurm.jobs`` asks
``squeue`` first and ``sacct`` for the rest; a job neither knows comes back absent, and the
caller keeps what the run's status file says.

Example:
    >>> r = resources_from({"gpus": "1", "time": "2:00:00"}, defaults={"partition": "gpu"})
    >>> (r.partition, r.gpus, r.time)
    ('gpu', 1, '2:00:00')
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from app.security import LaunchError
from trainer import pysource
from trainer.runs.launcher_record import JOB_STATES  # noqa: F401 - re-exported
from trainer.runs.launcher_record import job_run_state as run_state

#: form and config keys of a resource request, in the order the script lists them
RESOURCE_KEYS = ("partition", "account", "nodes", "gpus", "cpus", "mem", "time")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.,:+-]{0,127}")
_MEM = re.compile(r"(\d{1,9})([KMGT]?)", re.IGNORECASE)
# minutes | min:sec | h:min:sec | days-h | days-h:min | days-h:min:sec (see sbatch --time)
_TIME = re.compile(
    r"(?:(?P<d>\d{1,4})-(?P<dh>\d{1,2})(?::(?P<dm>\d{1,2})(?::(?P<ds>\d{1,2}))?)?"
    r"|(?P<h>\d{1,4}):(?P<m>\d{1,2}):(?P<s>\d{1,2})"
    r"|(?P<mm>\d{1,6})(?::(?P<ss>\d{1,2}))?)"
)
_JOB_ID = re.compile(r"\d+(?:[_+]\d+)?")
_LIMITS = {"nodes": (1, 1024), "gpus": (0, 64), "cpus": (1, 1024)}
#: seconds before the time limit at which the trainer gets SIGTERM (to save and stop)
STOP_BEFORE_LIMIT_S = 120


class SlurmError(RuntimeError):
    """A Slurm command failed or is missing; the message names the command and its output."""


@dataclasses.dataclass(frozen=True)
class Resources:
    """A validated resource request; ``None`` leaves the choice to the cluster's defaults.

    Attributes:
        partition: ``--partition``.
        account: ``--account``.
        nodes: ``--nodes``; more than 1 trains across them, one ``torchrun`` per node.
        gpus: ``--gpus`` (per node with ``nodes`` > 1: ``--gpus-per-node``; 0: none
            requested, the run trains on the CPU).
        cpus: ``--cpus-per-task`` (one task per node).
        mem: ``--mem`` (per node), e.g. ``16G`` or ``8000`` (megabytes).
        time: ``--time``, e.g. ``90``, ``4:00:00`` or ``1-12``.
    """

    partition: str | None = None
    account: str | None = None
    nodes: int = 1
    gpus: int = 0
    cpus: int | None = None
    mem: str | None = None
    time: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Job:
    """What Slurm says about one job.

    Attributes:
        job_id: the id as Slurm prints it.
        state: the Slurm state word (``PENDING``, ``RUNNING``, ``COMPLETED``...).
        reason: why it waits or ended (``Resources``, ``Priority``, ``NonZeroExitCode``), or
            ``None``.
        exit_code: ``code:signal`` from sacct, or ``None``.
        source: ``squeue`` or ``sacct``.
    """

    job_id: str
    state: str
    reason: str | None = None
    exit_code: str | None = None
    source: str = "squeue"

    @property
    def run_state(self) -> str | None:
        """The VoxelBoard state this job state means (see ``run_state``)."""
        return run_state(self.state)


# ---- resources -------------------------------------------------------------------------------


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _check_int(key: str, value: Any) -> int:
    lo, hi = _LIMITS[key]
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"\d{1,5}", text):
        raise LaunchError(key, f"{key}: expected a whole number {lo} to {hi}, got {value!r}")
    number = int(text)
    if not lo <= number <= hi:
        raise LaunchError(key, f"{key}: {number} is out of range; expected {lo} to {hi}")
    return number


def check_resource(key: str, value: Any) -> Any:
    """One resource value, checked: it ends up in a batch script, so only plain tokens pass.

    Raises:
        LaunchError: naming the field, the value and what is accepted.
    """
    if key in _LIMITS:
        return _check_int(key, value)
    text = str(value).strip()
    if key in ("partition", "account"):
        if not _NAME.fullmatch(text):
            raise LaunchError(
                key, f"{key}: {value!r} is not a Slurm name (letters, digits and _ . , : + -)"
            )
        return text
    if key == "mem":
        if not _MEM.fullmatch(text) or int(_MEM.fullmatch(text).group(1)) == 0:
            raise LaunchError(key, f"mem: {value!r}; expected megabytes or e.g. 16G, 512M, 1T")
        return text.upper()
    if key == "time":
        if time_limit_s(text) is None:
            raise LaunchError(
                key,
                f"time: {value!r}; expected minutes, H:MM:SS, D-HH or D-HH:MM:SS (e.g. 4:00:00)",
            )
        return text
    raise LaunchError(key, f"{key}: unknown resource; allowed: {', '.join(RESOURCE_KEYS)}")


def time_limit_s(text: str) -> int | None:
    """Seconds of an sbatch ``--time`` value, or ``None`` if it is not one."""
    m = _TIME.fullmatch(text.strip())
    if m is None:
        return None
    g = {k: int(v) if v else 0 for k, v in m.groupdict().items()}
    if m.group("d") is not None:
        seconds = ((g["d"] * 24 + g["dh"]) * 60 + g["dm"]) * 60 + g["ds"]
    elif m.group("h") is not None:
        seconds = (g["h"] * 60 + g["m"]) * 60 + g["s"]
    else:
        seconds = g["mm"] * 60 + g["ss"]
    return seconds if seconds > 0 else None


def resources_from(
    form: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Resources:
    """Merge and check a resource request: the form wins over the config, the config over
    the dashboard's defaults; empty values (``None``, ``''``) count as not given.

    Raises:
        LaunchError: an unknown key or a bad value, naming the field.
    """
    chosen: dict[str, Any] = {}
    for source in (defaults, config, form):
        for key, value in (source or {}).items():
            if key not in RESOURCE_KEYS:
                raise LaunchError(
                    key, f"{key}: unknown Slurm resource; allowed: {', '.join(RESOURCE_KEYS)}"
                )
            if not _blank(value):
                chosen[key] = check_resource(key, value)
    return Resources(**chosen)


def config_section(config_file: str | os.PathLike) -> dict[str, Any]:
    """The ``slurm = dict(...)`` (or ``{...}``) section of an experiment config, unchecked.

    The config is not executed: only a top-level assignment of literal values is read, so
    the dashboard can read it without running user code. No section gives ``{}``.

    Raises:
        LaunchError: (field ``config``) the file is unreadable, or the section is not a dict
            of literals.
    """
    path = Path(config_file)
    try:
        tree = pysource.parse(path.read_text(encoding="utf-8"), str(path))
    except (OSError, SyntaxError, ValueError) as e:
        raise LaunchError("config", f"config: cannot read {path}: {e}") from None
    section: Any = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == "slurm"
        ):
            section = _literal_dict(node.value, path)
    return section


def _literal_dict(node: ast.expr, path: Path) -> dict[str, Any]:
    bad = LaunchError(
        "config",
        f"config: {path}: 'slurm' must be a dict of plain values, e.g. "
        "slurm = dict(partition='gpu', gpus=1, time='4:00:00')",
    )
    try:
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "dict"
        ):
            if node.args or any(k.arg is None for k in node.keywords):
                raise bad
            value = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        else:
            value = ast.literal_eval(node)
    except ValueError:
        raise bad from None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise bad
    return value


# ---- batch script ----------------------------------------------------------------------------


def batch_script(
    argv: Sequence[str],
    resources: Resources,
    env: Mapping[str, str] | None = None,
    comment: str = "",
) -> str:
    """The text of a batch script that runs ``argv`` with ``resources``.

    Resource options go into ``#SBATCH`` lines (values were checked to be plain tokens);
    options holding paths (``--output``, ``--chdir``) belong on the sbatch command line,
    where no quoting rules apply. The command is ``exec``'d so that the trainer itself is
    the job's process and gets Slurm's signals: SIGTERM on scancel and, for a time limit of
    at least 10 minutes, ``STOP_BEFORE_LIMIT_S`` seconds before the limit, so it can save
    a snapshot and stop.

    With ``resources.nodes`` > 1, ``argv`` is a ``run.py train`` command (its first item the
    Python interpreter): ``srun`` starts it once per node with ``--nnodes``, ``--node-rank``
    (``$SLURM_NODEID``) and ``--rdzv-endpoint`` on the allocation's first node (where this
    script runs) and a port free there; srun forwards the SIGTERM to every node.

    Args:
        argv: the command, one list item per argument.
        resources: checked resources.
        env: variables exported before the command.
        comment: first comment line (what this script is).
    """
    lines = ["#!/bin/bash"]
    if comment:
        lines += [f"# {line}" for line in comment.splitlines()]
    nodes = resources.nodes if resources.nodes > 1 else None
    options = {
        "partition": resources.partition,
        "account": resources.account,
        "nodes": nodes,
        "ntasks-per-node": 1 if nodes else None,
        "gpus-per-node" if nodes else "gpus": resources.gpus or None,
        "cpus-per-task": resources.cpus,
        "mem": resources.mem,
        "time": resources.time,
    }
    lines += [f"#SBATCH --{k}={v}" for k, v in options.items() if v is not None]
    limit = time_limit_s(resources.time) if resources.time else None
    if limit is not None and limit >= 600:
        lines.append(f"#SBATCH --signal=B:TERM@{STOP_BEFORE_LIMIT_S}")
    lines += [f"export {k}={shlex.quote(str(v))}" for k, v in (env or {}).items()]
    lines.append('echo "[$(date +%H:%M:%S)] Slurm job $SLURM_JOB_ID on $(hostname)"')
    lines.append(f"echo {shlex.quote('$ ' + shlex.join(argv))}")
    if nodes:
        lines += _srun_lines(argv)
    else:
        lines.append(f"exec {shlex.join(argv)}")
    return "\n".join(lines) + "\n"


#: the port the kernel gives a socket bound to port 0: free on this node at this moment
_FREE_PORT = "import socket; s = socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])"
#: each node's task: the command with its node's place (SLURM_NODEID is set per node by srun)
_PER_NODE = (
    'exec "$@" --nnodes "$SLURM_NNODES" --node-rank "$SLURM_NODEID" '
    '--rdzv-endpoint "$VOXELBOARD_RDZV_ENDPOINT"'
)


def _srun_lines(argv: Sequence[str]) -> list[str]:
    """One ``run.py train`` per node, meeting on the first node of the allocation, at the
    address Slurm reaches it by (its ``NodeAddr``, which is its name unless the cluster's
    configuration gives another)."""
    return [
        'rdzv_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        'rdzv_host=$(scontrol show node "$rdzv_node" 2>/dev/null'
        " | sed -n 's/.*NodeAddr=\\([^ ]*\\).*/\\1/p' | head -n 1)",
        "rdzv_host=${rdzv_host:-$rdzv_node}",
        f"rdzv_port=$({shlex.quote(argv[0])} -c {shlex.quote(_FREE_PORT)})",
        'export VOXELBOARD_RDZV_ENDPOINT="$rdzv_host:$rdzv_port"',
        'echo "rendezvous of $SLURM_NNODES nodes at $VOXELBOARD_RDZV_ENDPOINT"',
        'exec srun --nodes="$SLURM_NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 '
        f"bash -c {shlex.quote(_PER_NODE)} vb-node {shlex.join(argv)}",
    ]


# ---- parsers ---------------------------------------------------------------------------------


def parse_sbatch(stdout: str) -> str:
    """The job id from ``sbatch --parsable`` output (``123`` or ``123;cluster``).

    Raises:
        SlurmError: no job id in the output.
    """
    for line in reversed(stdout.strip().splitlines()):
        head = line.strip().split(";", 1)[0]
        if _JOB_ID.fullmatch(head):
            return head
    raise SlurmError(f"sbatch printed no job id: {stdout.strip()[:300]!r}")


def _reason(text: str) -> str | None:
    text = text.strip().strip("()")
    return None if text in ("", "None", "(null)") else text


def parse_squeue(stdout: str) -> dict[str, Job]:
    """Jobs from ``squeue --noheader --format='%i|%T|%r'``; malformed lines are skipped.

    The reason is the last field, so a ``|`` inside it does not shift anything.
    """
    jobs = {}
    for line in stdout.splitlines():
        parts = line.strip().split("|", 2)
        if len(parts) < 2 or not _JOB_ID.fullmatch(parts[0].strip()) or not parts[1].strip():
            continue
        job_id = parts[0].strip()
        reason = _reason(parts[2]) if len(parts) > 2 else None
        jobs[job_id] = Job(job_id, parts[1].strip().upper(), reason, None, "squeue")
    return jobs


def parse_sacct(stdout: str) -> dict[str, Job]:
    """Jobs from ``sacct --noheader --parsable2 --allocations
    --format=JobIDRaw,State,Reason,ExitCode``; job steps and malformed lines are skipped.

    A requeued job appears once per attempt; the last line wins.
    """
    jobs = {}
    for line in stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or not _JOB_ID.fullmatch(parts[0].strip()) or not parts[1].strip():
            continue
        job_id = parts[0].strip()
        state = parts[1].strip().split(" ", 1)[0].rstrip("+").upper()
        reason = _reason(parts[2]) if len(parts) > 2 else None
        exit_code = parts[3].strip() or None if len(parts) > 3 else None
        jobs[job_id] = Job(job_id, state, reason, exit_code, "sacct")
    return jobs


# ---- commands --------------------------------------------------------------------------------


class Slurm:
    """Runs Slurm's client commands (no shell) and parses what they print.

    Args:
        timeout_s: seconds one command may take (a slow controller must not hang the caller).
        env: environment for the commands (default: this process's; ``SLURM_CONF`` in it
            picks the cluster).
    """

    def __init__(self, timeout_s: float = 30.0, env: Mapping[str, str] | None = None) -> None:
        self.timeout_s = float(timeout_s)
        self.env = None if env is None else dict(env)

    def problem(self) -> str | None:
        """Why Slurm cannot be used from here (a command is missing), or ``None``."""
        path = (self.env or os.environ).get("PATH")
        missing = [c for c in ("sbatch", "squeue", "scancel") if shutil.which(c, path=path) is None]
        if missing:
            return (
                f"Slurm commands not found: {', '.join(missing)} (install Slurm's client "
                "tools on this machine, or start the dashboard with --backend local)"
            )
        return None

    def _run(self, argv: list[str], ok_codes: Iterable[int] = (0,)) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                env=self.env,
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise SlurmError(f"{argv[0]}: command not found; {self.problem() or ''}") from None
        except subprocess.TimeoutExpired:
            raise SlurmError(
                f"{shlex.join(argv)}: no answer within {self.timeout_s:.0f} s "
                "(is slurmctld reachable?)"
            ) from None
        if proc.returncode not in tuple(ok_codes):
            said = (proc.stderr or proc.stdout).strip().replace("\n", " ")[:500]
            raise SlurmError(f"{shlex.join(argv)} exited with {proc.returncode}: {said}")
        return proc

    def submit(self, script: str | os.PathLike, options: Sequence[str] = ()) -> str:
        """``sbatch --parsable [options] script``; returns the job id.

        Raises:
            SlurmError: sbatch refused (its message says why: unknown partition, limits...).
        """
        proc = self._run(["sbatch", "--parsable", *options, str(script)])
        return parse_sbatch(proc.stdout)

    def jobs(self, job_ids: Iterable[str]) -> dict[str, Job]:
        """State of each job Slurm still knows: squeue first, sacct for the others.

        A job neither knows is absent from the result. sacct failing (no accounting
        database) is not an error: its jobs are just absent.

        Raises:
            SlurmError: squeue failed (controller down, command missing).
        """
        ids = sorted({str(j) for j in job_ids if _JOB_ID.fullmatch(str(j))})
        if not ids:
            return {}
        proc = self._run(
            [
                "squeue",
                "--noheader",
                "--states=all",
                f"--jobs={','.join(ids)}",
                "--format=%i|%T|%r",
            ],
            ok_codes=(0, 1),
        )
        if proc.returncode == 1 and "invalid job id" not in proc.stderr.lower():
            said = proc.stderr.strip().replace("\n", " ")[:500]
            raise SlurmError(f"squeue exited with 1: {said}")
        found = {k: v for k, v in parse_squeue(proc.stdout).items() if k in ids}
        rest = [j for j in ids if j not in found]
        if rest and shutil.which("sacct", path=(self.env or os.environ).get("PATH")):
            try:
                proc = self._run(
                    [
                        "sacct",
                        "--noheader",
                        "--parsable2",
                        "--allocations",
                        f"--jobs={','.join(rest)}",
                        "--format=JobIDRaw,State,Reason,ExitCode",
                    ]
                )
            except SlurmError:
                return found
            found.update({k: v for k, v in parse_sacct(proc.stdout).items() if k in rest})
        return found

    def cancel(self, job_id: str, signal: str | None = None) -> None:
        """``scancel job_id``, or with ``signal`` (e.g. ``TERM``) send that signal to every
        process of the job, batch step included, without ending the job by force.

        Raises:
            SlurmError: scancel failed (e.g. the job belongs to someone else).
        """
        if not _JOB_ID.fullmatch(str(job_id)):
            raise SlurmError(f"scancel: {job_id!r} is not a Slurm job id")
        options = [f"--signal={signal}", "--full"] if signal else []
        self._run(["scancel", *options, str(job_id)])
