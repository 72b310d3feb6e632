"""Drive sweeps: make one, queue its trials through a launcher, tell the study how they ended.

A sweep (``trainer.sweeps``) runs as ordinary runs that a ``Launcher`` starts, stops and
watches with its backend (local processes or Slurm jobs). This module adds the loop on top:
``tick`` follows the sweep's trials (a finished trial's best metric value, a pruned, stopped
or failed trial's end go to the Optuna study) and queues new trials while fewer than
``max_parallel`` are queued or running, until ``n_runs`` trials ran, the sweep is stopped, or
``max_failures`` trials failed.

Everything ``tick`` needs is on disk (``trainer.runs.sweeps``), under the sweep's lock, so
any process may drive a sweep: ``run.py sweep`` in a terminal, or a dashboard's launcher
thread, which picks up every unfinished sweep of its backend after a restart.

A dashboard's launch form makes a sweep with ``start_sweep``: ``run.py sweep --detach`` in a
child process (the config is executed there, never in the dashboard), started and followed by
the launcher's ``SweepStarts`` without blocking the request.

Example:
    >>> sweep_id = create_sweep("runs", "examples/demo_sweep.py")  # doctest: +SKIP
    >>> tick(launcher, sweep_folder("runs", sweep_id))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from trainer.runs import (
    FINAL_STATES,
    HISTORY_DIR,
    TRUNCATED,
    is_truncated,
    read_run_state,
    read_status,
)
from trainer.runs.launch import launch_backend, launch_path
from trainer.runs.sweeps import (
    SWEEP_FILE,
    TrialEntry,
    TrialsRecord,
    check_sweep_id,
    iter_sweep_dirs,
    live_driver,
    read_driver,
    read_sweep,
    read_trials,
    study_path,
    sweep_config_path,
    sweep_dir,
    sweep_lock,
    sweeps_lock,
    sweeps_root,
    write_sweep,
    write_sweep_config,
    write_trials,
)
from trainer.sweeps import (
    MAX_PARALLEL,
    SweepSpec,
    best_value,
    open_study,
    parse_sweep,
    shorten,
    spec_from_json,
    suggest_params,
)

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
#: seconds ``run.py sweep --detach`` may take to check a config and make its sweep
SWEEP_TIMEOUT_S = 60
#: most lines of ``run.py sweep``'s complaint kept for the launch form
ERROR_LINES = 30
#: sweeps being made whose outcome a dashboard keeps for the launch form to fetch
KEPT_STARTS = 64

#: run states that count against ``max_failures``
FAILED_STATES = frozenset({"failed", "diverged", "lost"})
#: what the study is told when a trial's run ends in each state
_TOLD = {"finished": "complete", "pruned": "pruned", "stopped": "pruned", TRUNCATED: "pruned"}
#: the state of a drawn trial whose run the launch queue had no room for yet
WAITING = "waiting"


class SweepError(ValueError):
    """A sweep cannot be made or changed; the message names the value and what to do."""


class DamagedSweepError(SweepError):
    """A sweep folder's ``sweep.json`` is there but unreadable."""


def sweep_folder(runs_dir: str | os.PathLike, sweep_id: str) -> Path:
    """The folder of sweep ``sweep_id``.

    Raises:
        SweepError: the id is not a sweep id, or no such sweep exists.
    """
    try:
        folder = sweep_dir(runs_dir, sweep_id)
    except ValueError as e:
        raise SweepError(str(e)) from None
    if read_sweep(folder) is None:
        if (folder / SWEEP_FILE).is_file():
            raise DamagedSweepError(
                f"sweep {sweep_id!r}: {folder / SWEEP_FILE} is damaged (not a JSON object), so "
                "the sweep can be neither shown nor driven; restore that file (its trials' runs "
                "are untouched)"
            )
        raise SweepError(f"sweep {sweep_id!r}: no such sweep in {sweeps_root(runs_dir)}")
    return folder


def create_sweep(
    runs_dir: str | os.PathLike,
    config_path: str | os.PathLike,
    backend: str = "local",
    max_parallel: int | None = None,
    device: str = "auto",
    resources: Mapping[str, Any] | None = None,
    max_sweeps: int | None = None,
    n_runs: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> str:
    """Check a config's sweep and make its folder, study and record; no trial starts here.

    The config runs first; the unfinished sweeps are then counted and the sweep is made
    under the runs folder's sweeps lock (``sweeps_lock``), so no other process's count or
    sweep comes between the two.

    Args:
        runs_dir: where the trials' runs go; the sweep lives in ``<runs_dir>/.sweeps/<id>``.
        config_path: a config with a ``sweep`` section.
        backend: ``local`` or ``slurm``: the launchers that may drive it.
        max_parallel: trials at once (default: the section's ``max_parallel``).
        device, resources: as for a launch (``Launcher.launch``), for every trial.
        max_sweeps: refuse when this many sweeps of ``backend`` are unfinished (a
            dashboard's ``app.limits.MAX_SWEEPS``); ``None``: no cap (``run.py sweep`` in a
            terminal).
        n_runs: fewer (or more) trials than the section's ``n_runs``.
        overrides: ``n_steps``, ``batch_size``, ``lr`` for every trial, where not swept
            (``trainer.sweeps.shorten``); recorded in ``sweep.json`` as ``overrides``.

    Returns:
        The sweep id: ``<config name>-sweep-<n>``.

    Raises:
        ConfigError: the config or its sweep section is invalid (every problem listed).
        SweepError: a bad ``max_parallel``, or ``max_sweeps`` sweeps are unfinished.
    """
    import optuna  # noqa: F401 - imported before the lock, which is held while it is used

    from trainer.config import ExperimentConfig

    config_path = Path(config_path).absolute()
    cfg = ExperimentConfig(config_path)
    spec, given = shorten(parse_sweep(cfg), n_runs, **dict(overrides or {}))
    parallel = spec.max_parallel if max_parallel is None else max_parallel
    if not isinstance(parallel, int) or not 1 <= parallel <= MAX_PARALLEL:
        raise SweepError(f"--max-parallel {parallel!r}: expected 1 to {MAX_PARALLEL} trials")
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", config_path.stem).strip("._-")[:40] or "sweep"
    with sweeps_lock(runs_dir):
        if max_sweeps is not None:
            _check_cap(runs_dir, backend, max_sweeps, 0)
        sweep_id = _make(runs_dir, base, config_path, spec, backend, parallel, device,
                         resources, given)  # fmt: skip
    log.info("sweep %s: %d runs of %s (%s)", sweep_id, spec.n_runs, config_path.name, spec.method)
    return sweep_id


def _make(
    runs_dir: str | os.PathLike,
    base: str,
    config_path: Path,
    spec: SweepSpec,
    backend: str,
    parallel: int,
    device: str,
    resources: Mapping[str, Any] | None,
    overrides: Mapping[str, Any],
) -> str:
    root = sweeps_root(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    folder = _claim(root, f"{base}-sweep")
    sweep_id = folder.name
    copy = write_sweep_config(folder, config_path.read_bytes())
    open_study(study_path(folder), sweep_id, spec, create=True)
    write_trials(folder, TrialsRecord())
    write_sweep(folder, {
        "format": 1,
        "id": sweep_id,
        "config": config_path.name,
        "config_source": str(config_path),
        "config_path": str(copy),
        "backend": backend,
        "max_parallel": parallel,
        "device": device,
        "resources": dict(resources or {}),
        "overrides": dict(overrides),  # n_steps, batch_size, lr of every trial
        "created": time.time(),
        "spec": spec.to_json(),
    })  # fmt: skip
    return sweep_id


def _check_cap(runs_dir: str | os.PathLike, backend: str, max_sweeps: int, pending: int) -> None:
    """Raise ``SweepError`` when ``max_sweeps`` sweeps of ``backend`` are unfinished or being
    made (``pending``); called under a lock (``sweeps_lock``, ``SweepStarts.counting``)."""
    n = sum(1 for _ in unfinished(runs_dir, backend)) + pending
    if n >= max_sweeps:
        sweeps = "sweep is" if n == 1 else "sweeps are"
        raise SweepError(
            f"{n} {sweeps} unfinished on the {backend} backend, the most this dashboard starts "
            f"({max_sweeps}); stop one on its sweep page, or wait until one ends"
        )


def _claim(root: Path, base: str) -> Path:
    for i in range(1, 100_000):
        folder = root / f"{base}-{i}"
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise SweepError(f"no free sweep id left for {base!r} in {root}")


def unfinished(runs_dir: str | os.PathLike, backend: str) -> Iterator[Path]:
    """Folders of the sweeps of ``backend`` that are still running."""
    for folder in iter_sweep_dirs(runs_dir):
        # trials.json first: most sweeps on a long-used runs folder have ended, and this runs
        # at every scheduler tick
        if read_trials(folder).state != "running":
            continue
        if launch_backend(read_sweep(folder)) == backend:
            yield folder


def start_sweep(
    launcher: Any,
    config_name: str,
    device: Any = "auto",
    max_parallel: Any = 1,
    resources: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    n_runs: Any = None,
) -> str:
    """Start making a sweep of a config for a dashboard's launcher, and return at once.

    ``run.py sweep --detach`` executes the config in a child process, checks its sweep and
    makes the sweep's folder; ``launcher.sweep_starts.get(token)`` tells how that went, and
    the launcher's scheduler thread drives the sweep (``Launcher.drive_sweeps``).

    Args:
        launcher: the dashboard's ``Launcher``; its backend runs the trials.
        config_name: a ``*.py`` file inside the launcher's configs folder with a ``sweep``
            section.
        device: as for ``Launcher.launch``, for every trial.
        max_parallel: trials at once, 1 to ``trainer.sweeps.MAX_PARALLEL``.
        resources: the backend's checked resources (``Backend.resources_from_form``).
        overrides: the form's ``n_steps``, ``batch_size``, ``lr`` for every trial (empty:
            the config's); ``run.py sweep`` refuses one the sweep draws.
        n_runs: the form's number of trials (empty: the section's).

    Returns:
        The token of the ``SweepStart``.

    Raises:
        LaunchError: a bad field, or ``app.limits.MAX_SWEEPS`` sweeps are unfinished or being
            made already.
    """
    from app import inputs, limits
    from app.backends import env_for
    from app.security import LaunchError, resolve_config, validate_device, validate_overrides
    from trainer.sweeps import MAX_RUNS

    parallel = inputs.integer(max_parallel, lo=1, hi=MAX_PARALLEL)
    if parallel is None or parallel != max_parallel:
        raise LaunchError(
            "max_parallel",
            f"Max parallel: expected a whole number of trials from 1 to {MAX_PARALLEL}, "
            f"got {max_parallel!r}",
        )
    shortened = validate_overrides({k: v for k, v in (overrides or {}).items() if k != "save_name"})
    text = "" if n_runs is None or isinstance(n_runs, bool) else str(n_runs).strip()
    if text:  # empty: the section's n_runs
        if not text.isdigit() or not 1 <= int(text) <= MAX_RUNS:
            raise LaunchError("n_runs", f"Runs: expected a whole number from 1 to {MAX_RUNS}, "
                                        f"got {n_runs!r}")  # fmt: skip
        shortened["n_runs"] = int(text)
    config = resolve_config(launcher.configs_dirs, config_name)
    device = validate_device(device, launcher.gpus())
    argv = sweep_argv(
        config, python=launcher.python, runs_dir=launcher.runs_dir, data_dir=launcher.data_dir,
        backend=launcher.backend, max_parallel=parallel, device=device, resources=resources,
        max_sweeps=limits.MAX_SWEEPS, shortened=shortened,
    )  # fmt: skip
    spawn = launcher.spawn
    # counted and started under one lock: concurrent requests to this dashboard see each
    # other's starts. The child counts again under the runs folder's sweeps lock when it
    # makes the sweep (create_sweep), which holds against other dashboards and terminals.
    with launcher.sweep_starts.counting:
        try:
            _check_cap(launcher.runs_dir, launcher.backend, limits.MAX_SWEEPS,
                       launcher.sweep_starts.pending())  # fmt: skip
        except SweepError as e:
            raise LaunchError("config", str(e)) from None
        try:
            return launcher.sweep_starts.start(
                argv, env_for(spawn.env), spawn.cwd, config.name, parallel
            )
        except OSError as e:
            raise LaunchError("config", f"cannot start run.py sweep: {e}") from None


def sweep_argv(
    config: Path,
    *,
    python: str,
    runs_dir: Path,
    data_dir: Path,
    backend: str,
    max_parallel: int,
    device: str,
    resources: Mapping[str, Any] | None = None,
    max_sweeps: int | None = None,
    run_py: Path = REPO_ROOT / "run.py",
    shortened: Mapping[str, Any] | None = None,
) -> list[str]:
    """The ``run.py sweep --detach`` command that makes a sweep of ``config`` (refused when
    ``max_sweeps`` sweeps are unfinished); ``shortened``: ``n_runs``, ``n_steps``,
    ``batch_size``, ``lr`` (``--n-runs`` ...)."""
    argv = [python, str(run_py), "sweep", str(config), "--detach",
            f"--runs-dir={runs_dir}", f"--data-dir={data_dir}", f"--backend={backend}",
            f"--max-parallel={max_parallel}", f"--device={device}"]  # fmt: skip
    if max_sweeps is not None:
        argv.append(f"--max-sweeps={max_sweeps}")
    for key, value in (shortened or {}).items():
        argv.append(f"--{key.replace('_', '-')}={value!r}")
    for key, value in (resources or {}).items():
        argv.append(f"--slurm-{key}={value}")
    return argv


@dataclasses.dataclass
class SweepStart:
    """A sweep that ``run.py sweep --detach`` is making for the launch form.

    Attributes:
        config: the config's file name.
        max_parallel: trials at once.
        sweep_id: the sweep made, once it is.
        problems: why no sweep was made (the lines ``run.py sweep`` complained with), once
            it ended without one.
        timed_out: it was stopped after ``SweepStarts.timeout_s`` seconds.
    """

    config: str
    max_parallel: int
    sweep_id: str | None = None
    problems: list[str] | None = None
    timed_out: bool = False

    @property
    def done(self) -> bool:
        return self.sweep_id is not None or self.problems is not None


class SweepStarts:
    """The ``run.py sweep --detach`` children a dashboard started, each under a token.

    ``start`` returns at once: the child executes the config and makes the sweep (the
    dashboard never runs a config), and a thread waits for it, at most ``timeout_s``
    seconds, and records what came of it. A launcher's scheduler thread then drives the
    sweep (``tick``).
    """

    def __init__(self, timeout_s: float = SWEEP_TIMEOUT_S) -> None:
        self.timeout_s = float(timeout_s)
        #: held while a start is counted against a cap and started (``start_sweep``)
        self.counting = threading.Lock()
        self._lock = threading.Lock()
        self._starts: dict[str, SweepStart] = {}

    def start(
        self, argv: list[str], env: Mapping[str, str], cwd: Path, config: str, max_parallel: int
    ) -> str:
        """Start ``argv`` (``sweep_argv``) and return the token of its ``SweepStart``.

        Raises:
            OSError: the child cannot be started.
        """
        from app.backends import start_process

        proc = start_process(argv, env, cwd, subprocess.PIPE, subprocess.PIPE)
        token = secrets.token_urlsafe(12)
        with self._lock:
            while len(self._starts) >= KEPT_STARTS:  # the oldest outcome nobody fetched goes
                oldest = next((t for t, s in self._starts.items() if s.done), None)
                if oldest is None:
                    break
                del self._starts[oldest]
            self._starts[token] = SweepStart(config, max_parallel)
        threading.Thread(
            target=self._wait, args=(token, proc, config), name=f"sweep-start-{config}", daemon=True
        ).start()
        return token

    def get(self, token: Any) -> SweepStart | None:
        """The sweep start of ``token`` (a copy), or ``None`` for a token this dashboard did
        not hand out."""
        with self._lock:
            found = self._starts.get(token) if isinstance(token, str) else None
            return dataclasses.replace(found) if found is not None else None

    def pending(self) -> int:
        """Sweeps being made now."""
        with self._lock:
            return sum(1 for s in self._starts.values() if not s.done)

    def _wait(self, token: str, proc: subprocess.Popen, config: str) -> None:
        try:
            out, err = proc.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            with self._lock:
                self._starts[token].timed_out = True
            self._done(token, None, [
                f"run.py sweep did not make the sweep within {self.timeout_s:g} s (executing "
                f"{config} takes that long?); try `python run.py sweep {config}` in a terminal"
            ])  # fmt: skip
            return
        text = out.decode(errors="replace") if out else ""
        sweep_id = (text.strip().splitlines() or [""])[-1]
        if proc.returncode == 0 and _is_sweep_id(sweep_id):
            self._done(token, sweep_id, None)
            return
        lines = [ln.strip() for ln in (err or b"").decode(errors="replace").splitlines()]
        lines = [ln for ln in lines if ln][-ERROR_LINES:]
        self._done(token, None, lines or [f"run.py sweep ended with exit status {proc.returncode}"])

    def _done(self, token: str, sweep_id: str | None, problems: list[str] | None) -> None:
        with self._lock:
            start = self._starts.get(token)
            if start is not None:
                start.sweep_id, start.problems = sweep_id, problems
        log.info("sweep start %s: %s", token[:4], sweep_id or "; ".join(problems or []))


def _is_sweep_id(text: str) -> bool:
    try:
        check_sweep_id(text)
    except ValueError:
        return False
    return True


def spec_of(record: Mapping[str, Any]) -> SweepSpec:
    return spec_from_json(record["spec"])


def trial_run_name(sweep_id: str, number: int) -> str:
    return f"{sweep_id}-{number:03d}"


def tick(launcher: Any, folder: Path) -> TrialsRecord:
    """Follow a sweep's trials and queue the next ones; returns the record written.

    Runs under the sweep's lock: two processes driving the same sweep never launch a trial
    twice. The Optuna study is opened only when a trial ended or one is to be queued. A full
    launch queue is waited for: no more trials are drawn than it takes, and a trial drawn
    when it filled up meanwhile (state ``waiting``) is launched, with the same number and
    values, at a later tick.
    """
    with sweep_lock(folder):
        record = read_sweep(folder)
        if record is None:
            raise SweepError(f"{folder}: no sweep.json")
        spec = spec_of(record)
        trials = read_trials(folder)
        if trials.state != "running":
            return trials
        runs_dir = Path(launcher.runs_dir)
        ended = _follow(runs_dir, trials, spec)
        parallel = int(record.get("max_parallel", spec.max_parallel))
        to_queue = _to_queue(trials, spec, parallel)
        waiting = [t for t in trials.trials if t.state == WAITING]
        room = launcher.queue_room() if to_queue or waiting else 0
        cancel = trials.stop_requested is not None or _failures(trials) >= spec.max_failures
        study = (
            _open(folder, record, spec, trials)
            if ended or (waiting and (room or cancel)) or (to_queue and room)
            else None
        )
        if study is not None:
            _fail_orphans(study, trials, record["id"])
        for entry in ended:
            _tell(study, entry)
        if cancel or _failures(trials) >= spec.max_failures:
            for entry in waiting:  # never launched: ends with the sweep
                entry.told, entry.state = "fail", "stopped"
                _tell(study, entry)
            waiting = []
        _end_if_done(trials, spec)
        for entry in waiting:
            launched = room > 0 and _launch(launcher, folder, record, spec, study, entry)
            room = room - 1 if launched else 0  # full again: nothing more this tick
            if not launched:
                break
        for _ in range(min(to_queue, room) if trials.state == "running" else 0):
            if not _queue_trial(launcher, folder, record, spec, study, trials):
                break
        _end_if_done(trials, spec)
        if trials.state != "running":  # ended in this tick: nothing RUNNING stays behind
            _fail_orphans(study or _open(folder, record, spec, trials), trials, record["id"])
        write_trials(folder, trials)
        return trials


def _open(folder: Path, record: Mapping[str, Any], spec: SweepSpec, trials: TrialsRecord) -> Any:
    return open_study(study_path(folder), record["id"], spec, drawn_before=len(trials.trials))


def _fail_orphans(study: Any, trials: TrialsRecord, sweep_id: str) -> list[int]:
    """Mark FAIL the trials RUNNING in the study that ``trials.json`` does not list, and ask
    their values again; returns their numbers.

    Trials are asked and recorded under the sweep's lock, held by the caller: such a trial
    was asked by a driver killed before it recorded it, and nobody will ever tell the study
    how it ended. Failing it is what Optuna does with a stale trial
    (``optuna.storages.fail_stale_trials``); its values go back into the study's queue
    (``Study.enqueue_trial``, as ``RetryHeartbeatStaleTrialCallback`` does), so the next
    trial asked gets them: a grid sweep still covers its whole grid, and the sweep still
    runs ``n_runs`` trials (the orphan was never one of them).
    """
    import optuna

    known = {t.number for t in trials.trials}
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    orphans = [t for t in running if t.number not in known]
    for trial in orphans:
        log.warning("sweep %s: trial %d was asked by a driver that died before recording it; "
                    "marked failed, its values are asked again", sweep_id, trial.number)  # fmt: skip
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        if trial.params and trials.state == "running":
            study.enqueue_trial(trial.params)
    return [t.number for t in orphans]


def _follow(runs_dir: Path, trials: TrialsRecord, spec: SweepSpec) -> list[TrialEntry]:
    """Update each open trial's state; the ones whose runs ended, with their values."""
    ended = []
    for entry in trials.trials:
        if entry.told is not None or entry.state == WAITING:  # no run yet
            continue
        if not launch_path(runs_dir / entry.run).exists():
            if entry.state == "queued":
                # recorded, never queued: the process driving the sweep died between the
                # two. Trials are launched under the sweep's lock, held here, so nobody is
                # launching it now: it waits and is queued again with its number and values.
                log.warning("sweep trial %d: its run %s was never queued; queueing it again",
                            entry.number, entry.run)  # fmt: skip
                entry.state = WAITING
                continue
            state = "lost"  # the run started once; its folder is gone
        else:
            state = read_run_state(runs_dir / entry.run).state
        if is_truncated(state, read_status(runs_dir / entry.run)):
            state = TRUNCATED  # max_runtime ended it early: never ranked beside full trials
        entry.state = state
        if state not in FINAL_STATES and state not in ("lost", TRUNCATED):
            continue
        entry.value = best_value(_metric_values(runs_dir / entry.run, spec.metric), spec.goal)
        told = _TOLD.get(state, "fail")
        entry.told = "fail" if told == "complete" and entry.value is None else told
        ended.append(entry)
    return ended


def _metric_values(run_dir: Path, metric: str) -> list[float]:
    from trainer.runs.history_store import read_table

    try:
        table = read_table(run_dir / HISTORY_DIR, "history")
    except (OSError, ValueError):
        return []
    return table[metric].tolist() if metric in table.columns else []


def _tell(study: Any, entry: TrialEntry) -> None:
    import optuna

    states = {"pruned": optuna.trial.TrialState.PRUNED, "fail": optuna.trial.TrialState.FAIL}
    try:
        if entry.told == "complete":
            study.tell(entry.number, entry.value)
        else:
            study.tell(entry.number, state=states[entry.told])
    except RuntimeError as e:
        # the grid sampler asks the study to stop once every point was drawn; that is
        # meant for study.optimize and harmless here (the state is stored before)
        log.debug("sweep trial %d: %s", entry.number, e)
    except ValueError as e:  # told already (by a driver that then died)
        log.warning("sweep trial %d: %s", entry.number, e)


def _to_queue(trials: TrialsRecord, spec: SweepSpec, parallel: int) -> int:
    if trials.stop_requested is not None or _failures(trials) >= spec.max_failures:
        return 0
    active = sum(1 for t in trials.trials if t.told is None)
    left = spec.n_runs - len(trials.trials)
    return max(0, min(left, parallel - active))


def _failures(trials: TrialsRecord) -> int:
    return sum(1 for t in trials.trials if t.told == "fail" and t.state in FAILED_STATES)


def _end_if_done(trials: TrialsRecord, spec: SweepSpec) -> None:
    if trials.state != "running" or any(t.told is None for t in trials.trials):
        return
    if trials.stop_requested is not None:
        trials.state = "stopped"
    elif (n := _failures(trials)) >= spec.max_failures:
        trials.state = "failed"
        trials.reason = (
            f"{n} trials failed (max_failures = {spec.max_failures}): no more trials were "
            "started; see the failed runs' logs"
        )
    elif len(trials.trials) >= spec.n_runs:
        trials.state = "finished"


def _queue_trial(
    launcher: Any,
    folder: Path,
    record: Mapping[str, Any],
    spec: SweepSpec,
    study: Any,
    trials: TrialsRecord,
) -> bool:
    """Ask the study for a trial and queue its run; False if the launch queue was full (the
    trial then waits: see ``tick``)."""
    trial = study.ask()
    suggest_params(trial, spec)
    entry = TrialEntry(trial.number, trial_run_name(record["id"], trial.number), {})
    trials.trials.append(entry)
    return _launch(launcher, folder, record, spec, study, entry, trials)


def _launch(
    launcher: Any,
    folder: Path,
    record: Mapping[str, Any],
    spec: SweepSpec,
    study: Any,
    entry: TrialEntry,
    trials: TrialsRecord | None = None,
) -> bool:
    """Queue the run of a drawn trial (its values as the study holds them); False if the
    launch queue was full, leaving the trial ``waiting``. A trial the launcher refuses for
    another reason has failed."""
    from app.security import LaunchError, QueueFullError

    (drawn,) = [t.params for t in study.get_trials(deepcopy=False) if t.number == entry.number]
    entry.params, entry.state = _jsonable(spec.decode(drawn)), "queued"
    if trials is not None:
        write_trials(folder, trials)  # recorded before the run exists: never launched twice
    try:
        launcher.launch_trial(
            sweep_config_path(folder),
            entry.run,
            {"sweep": record["id"], "number": entry.number, "drawn": drawn,
             "params": entry.params, "metric": spec.metric},
            device=record.get("device", "auto"),
            resources=record.get("resources") or None,
            overrides=record.get("overrides") or None,
        )  # fmt: skip
    except QueueFullError as e:
        log.info(
            "sweep %s: trial %d waits for room in the queue: %s", record["id"], entry.number, e
        )
        entry.state = WAITING
        return False
    except (LaunchError, OSError) as e:
        log.warning("sweep %s: trial %d not queued: %s", record["id"], entry.number, e)
        entry.told, entry.state = "fail", "failed"
        _tell(study, entry)
    return True


def _jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    from trainer.config import to_jsonable

    return {k: to_jsonable(v) for k, v in values.items()}


def stop_sweep(launcher: Any, folder: Path, reason: str = "stopped") -> list[str]:
    """Stop a sweep: no new trial is queued; queued and running trials are stopped.

    Returns:
        Names of the trial runs asked to stop.
    """
    from app.security import LaunchError

    with sweep_lock(folder):
        trials = read_trials(folder)
        if trials.state != "running":
            return []
        if trials.stop_requested is None:
            trials.stop_requested, trials.reason = time.time(), reason
        open_runs = [t.run for t in trials.trials if t.told is None]
        record = read_sweep(folder) or {}
        _end_if_done(trials, spec_of(record))
        if trials.state != "running":
            _fail_orphans(_open(folder, record, spec_of(record), trials), trials, record["id"])
        write_trials(folder, trials)
    stopped = []
    for name in open_runs:
        try:
            launcher.stop(name)
            stopped.append(name)
        except LaunchError as e:  # ended meanwhile
            log.info("sweep trial %s: %s", name, e)
    return stopped


def cli_driver(folder: Path) -> int | None:
    """The pid of the ``run.py sweep`` process that drives the sweep now, else ``None``."""
    from trainer.runs import pid_alive

    return live_driver(read_driver(folder), time.time(), socket.gethostname(), pid_alive)


def summary(folder: Path) -> dict[str, Any]:
    """What a page or the command line shows about a sweep: its record, trials and state."""
    record = read_sweep(folder) or {}
    trials = read_trials(folder)
    values = [t.value for t in trials.trials if _ranked(t)]
    spec = record.get("spec", {})
    best = None
    if values:
        pick = max if spec.get("goal") == "max" else min
        best = next(t.run for t in trials.trials if _ranked(t) and t.value == pick(values))
    return {"record": record, "trials": trials, "best_run": best}


def _ranked(t: TrialEntry) -> bool:
    """Whether a trial competes for best: a finite value from a trial that ran all its steps."""
    return t.value is not None and math.isfinite(t.value) and t.state != TRUNCATED
