#!/usr/bin/env python
"""VoxelBoard command line.

    python run.py                     start the dashboard (same as `python run.py dashboard`)
    python run.py train CONFIG        train a model from an experiment config file
    python run.py sweep CONFIG        run the config's hyperparameter sweep (one run per trial)
    python run.py evaluate RUN_DIR    evaluate a run's snapshot on its validation/training cubes
    python run.py predict RUN_DIR INPUT OUTPUT   predict a whole volume block by block to disk
    python run.py segment RUN_DIR PROB OUTPUT    turn a prediction into neuron labels, blockwise
    python run.py view PATH[:KEY] ...  open volumes in neuroglancer as aligned layers
    python run.py demo-data [DIR]     write the synthetic EM-like demo data set

Run `python run.py <command> --help` for the options of each command.
"""

from __future__ import annotations

import argparse
import gc
import logging
import logging.handlers
import os
import signal
import sys
import traceback
from pathlib import Path

COMMANDS = ("dashboard", "train", "sweep", "evaluate", "predict", "segment", "view", "demo-data")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DIVERGED = 0, 1, 2, 3
#: True when this file runs as the command (``python run.py``), False when a caller (a test, a
#: notebook) calls ``main`` in its own process: process-wide settings are made only then
AS_COMMAND = False


def _label_id(text: str) -> int:
    """A true neuron id for --ignore-labels: a whole number in 0 .. 2**64 - 1."""
    try:
        v = int(text, 16) if text.lower().startswith("0x") else int(text)
    except ValueError:
        v = -1
    if not 0 <= v < 2**64:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a neuron id, a whole number in 0 .. 2**64 - 1 (e.g. 999)"
        )
    return v


def _add_worker_options(p: argparse.ArgumentParser) -> None:
    """predict's and segment's options for many workers (docs/cluster.md)."""
    p.add_argument("--workers", type=int, metavar="N",
                   help="N local worker processes sharing the blocks (one GPU each where there "
                        "are GPUs); the output must be a zarr folder")  # fmt: skip
    p.add_argument("--backend", choices=("local", "slurm"), default="local",
                   help="slurm: submit a job array of --jobs tasks sharing the blocks")  # fmt: skip
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="with --backend slurm: array tasks (capped at the number of blocks)")  # fmt: skip
    for key, example in (("partition", "gpu"), ("account", "lab"), ("gpus", "1"), ("cpus", "8"),
                         ("mem", "32G"), ("time", "12:00:00")):  # fmt: skip
        p.add_argument(f"--slurm-{key}", metavar=key.upper(),
                       help=f"Slurm {key} for each array task (e.g. {example})")  # fmt: skip
    p.add_argument("--wait", action="store_true",
                   help="with --backend slurm: follow the job until it ends (default: submit "
                        "and return)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    from app.refresh import DEFAULT_REFRESH_S, MAX_REFRESH_S, MIN_REFRESH_S
    from trainer.metrics import MODES

    parser = argparse.ArgumentParser(
        prog="run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("dashboard", help="start the dashboard (default)")
    d.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    d.add_argument("--port", type=int, default=8050)
    d.add_argument("--runs-dir", default="runs", help="where runs live (default ./runs)")
    d.add_argument("--configs-dir", action="append", default=None, metavar="DIR",
                   help="a folder of configs offered for launch (default examples); give it "
                        "again for more folders, listed by folder in the launch form")  # fmt: skip
    d.add_argument("--data-dir", default="data", help="demo data location (made on first start)")
    d.add_argument("--read-only", action="store_true", help="hide launch, stop and delete")
    d.add_argument("--demo", action="store_true", help="start the demo config if nothing runs")
    d.add_argument("--auth-file", help="basic-auth users, one 'user:password' per line")
    d.add_argument("--follow-links", action="store_true",
                   help="show run files and run folders that are links to places outside "
                        "--runs-dir (default: refused)")  # fmt: skip
    d.add_argument("--refresh", type=float, default=DEFAULT_REFRESH_S, metavar="SECONDS",
                   help=f"seconds between two refreshes of a live page (runs table, run, sweep, "
                        f"jobs; other pages every 2.5x, a lost run every 5x), "
                        f"{MIN_REFRESH_S:g}..{MAX_REFRESH_S:g} (default {DEFAULT_REFRESH_S:g})")  # fmt: skip
    d.add_argument("--debug", action="store_true")
    d.add_argument("--backend", choices=("local", "slurm"), default="local",
                   help="run launches as local processes (default) or as Slurm jobs")  # fmt: skip
    for key, example in (("partition", "gpu"), ("account", "lab"), ("nodes", "2"), ("gpus", "1"),
                         ("cpus", "8"), ("mem", "32G"), ("time", "12:00:00")):  # fmt: skip
        d.add_argument(f"--slurm-{key}", metavar=key.upper(),
                       help=f"default Slurm {key} for launches (e.g. {example})")  # fmt: skip

    t = sub.add_parser("train", help="train a model from an experiment config")
    t.add_argument("config", nargs="?", help="experiment config file (Python)")
    t.add_argument("--save-path", help="parent folder of the run directory")
    t.add_argument("--save-name", help="run directory name (default <config>__<time>)")
    t.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default auto)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its newest snapshot")
    t.add_argument("--use-existing-dir", action="store_true",
                   help="reuse an existing run directory (the dashboard's launcher makes it)")  # fmt: skip
    t.add_argument("--n-steps", type=int, help="override n_steps")
    t.add_argument("--batch-size", type=int, help="override batch_size")
    t.add_argument("--lr", type=float, help="override optimiser_params['lr']")
    t.add_argument("--max-runtime", type=float, help="override max_runtime (seconds)")
    t.add_argument("--nproc", type=int, default=1,
                   help="training processes (DDP through torchrun): GPUs, or CPU processes with gloo"
                        "; per node with --nnodes")  # fmt: skip
    t.add_argument("--nnodes", type=int, default=1,
                   help="machines training together (start run.py train on each, docs/cluster.md)")  # fmt: skip
    t.add_argument("--node-rank", type=int, default=0,
                   help="this machine's place, 0 .. NNODES-1; node 0 makes the run directory")  # fmt: skip
    t.add_argument("--rdzv-endpoint", metavar="HOST:PORT",
                   help="where the nodes meet (c10d rendezvous): node 0's name and a free port")  # fmt: skip
    t.add_argument("--debug", action="store_true", help="show tracebacks")

    w = sub.add_parser("sweep", help="run a config's hyperparameter sweep (docs/sweeps.md)")
    w.add_argument("config", nargs="?", help="experiment config with a `sweep` section")
    w.add_argument("--resume", metavar="SWEEP_ID", help="drive an unfinished sweep again")
    w.add_argument("--max-parallel", type=int, help="trials at once (default: the section's)")
    w.add_argument("--backend", choices=("local", "slurm"), default=None,
                   help="trials as local processes (default) or as Slurm jobs")  # fmt: skip
    w.add_argument("--runs-dir", default=None,
                   help="where the trials' runs go (default: the config's save_path, as for "
                        "train; with --resume: ./runs)")  # fmt: skip
    w.add_argument("--n-runs", type=int, help="run this many trials (default: the section's)")
    w.add_argument("--n-steps", type=int, help="override n_steps of every trial")
    w.add_argument(
        "--batch-size", type=int, help="override batch_size of every trial (not if swept)"
    )
    w.add_argument(
        "--lr", type=float, help="override optimiser_params['lr'] of every trial (not if swept)"
    )
    w.add_argument("--data-dir", default="data", help="demo data location")
    w.add_argument("--device", default="auto", help="auto | cpu | cuda:N, for every trial")
    for key, example in (("partition", "gpu"), ("account", "lab"), ("nodes", "2"), ("gpus", "1"),
                         ("cpus", "8"), ("mem", "32G"), ("time", "12:00:00")):  # fmt: skip
        w.add_argument(f"--slurm-{key}", metavar=key.upper(),
                       help=f"Slurm {key} for each trial (e.g. {example})")  # fmt: skip
    w.add_argument("--detach", action="store_true",
                   help="make the sweep, print its id and return: a dashboard on the same runs "
                        "folder and backend drives it")  # fmt: skip
    w.add_argument("--max-sweeps", type=int, metavar="N",
                   help="make no sweep while N sweeps of the backend are unfinished (a "
                        "dashboard's launch form passes its limit)")  # fmt: skip
    w.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)
    w.add_argument("--debug", action="store_true", help="show tracebacks")

    e = sub.add_parser("evaluate", help="evaluate a run's snapshot")
    e.add_argument("run_dir")
    e.add_argument("--snapshot",
                   help="snapshot file or name: FINAL, LAST, BEST, step-N (default FINAL, else LAST)")  # fmt: skip
    e.add_argument("--split", choices=("valid", "train", "both"), default="valid")
    e.add_argument("--mode", choices=MODES, default="binned")
    e.add_argument("--store-exact", action="store_true",
                   help="with --mode exact: also keep the counts at every distinct score in the "
                        "result file (large: ~20 bytes per score); by default it keeps the curves "
                        "thinned to 4096 points and the binned counts")  # fmt: skip
    e.add_argument("--device", default=None)
    e.add_argument("--name", default=None, help="result name (default: the snapshot name)")
    e.add_argument("--instances", action="store_true",
                   help="also score the neurons (VOI, adapted Rand, seeded segmentation) against "
                        "the config's instance_files")  # fmt: skip
    e.add_argument("--seg-grid", choices=("fast", "elektronn2"), default="fast",
                   help="optimise_segmentation's grid: 12 settings, or ELEKTRONN2's 144")  # fmt: skip
    e.add_argument("--ignore-labels", type=_label_id, nargs="+", metavar="ID",
                   help="true neuron ids not scored, as 0 (e.g. 999 for glia; 18446744073709551615 "
                        "for CREMI's background); default the config's instance_ignore_labels")  # fmt: skip
    e.add_argument("--rand-convention", choices=("skimage", "cremi"), default="skimage",
                   help="adapted Rand error: scikit-image's (segment 0 an ordinary segment) or "
                        "CREMI's (segment 0 out of the pair counts); docs/evaluation.md")  # fmt: skip
    e.add_argument("--debug", action="store_true")

    p = sub.add_parser("predict", help="predict a whole volume to disk, block by block")
    p.add_argument("run_dir")
    p.add_argument("input", help="HDF5 file or zarr/N5 folder of the raw volume")
    p.add_argument("output", help="zarr folder (written as OME-Zarr, NGFF 0.4) or .h5/.hdf5 "
                                  "file; resumed when it holds this same prediction")  # fmt: skip
    p.add_argument("--key", default=None, help="the input's dataset key (OME-Zarr: a level)")
    p.add_argument("--output-key", default="prob", help="the output array's key (default prob)")
    p.add_argument("--snapshot", help="snapshot file or name (default FINAL, else LAST)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--block", type=int, nargs=3, metavar=("Z", "Y", "X"),
                   help="input block (tile) shape; default as predict_dense chooses")  # fmt: skip
    p.add_argument("--dtype", choices=("float16", "uint8"), default="float16")
    p.add_argument("--crop", action="store_true",
                   help="write only the voxels the model sees whole (smaller by 2 * offsets; "
                        "the output's translation says where it starts)")  # fmt: skip
    p.add_argument("--pad-mode", choices=("symmetric", "reflect", "edge", "constant"),
                   default="symmetric",
                   help="how the input is padded by the model's offsets so the output covers "
                        "it (default symmetric: a mirror, as ELEKTRONN2's pad_raw)")  # fmt: skip
    p.add_argument("--voxel-size", type=float, nargs=3, metavar=("Z", "Y", "X"),
                   help="voxel size in nm (default: the input's, else the config's "
                        "voxel_size, else 1)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="start again over an existing prediction (of anything else)")  # fmt: skip
    _add_worker_options(p)
    p.add_argument("--debug", action="store_true")

    s = sub.add_parser("segment", help="turn a prediction into neuron labels, block by block")
    s.add_argument("run_dir", help="the run whose saved threshold or neuron scores are used")
    s.add_argument("prob", help="the output of run.py predict (zarr folder or HDF5 file)")
    s.add_argument("output", help="PROB/labels/NAME (a label image of an OME-Zarr prediction) "
                                  "or a new zarr folder; resumed when it holds this same "
                                  "segmentation")  # fmt: skip
    s.add_argument("--key", default="prob", help="the prediction's array key (default prob)")
    how = s.add_mutually_exclusive_group()
    how.add_argument("--threshold", type=float, metavar="T",
                     help="components of membrane < T (default: eval/threshold.json)")  # fmt: skip
    how.add_argument("--seeded", action="store_true",
                     help="the optimised seeded watershed of `evaluate --instances`")  # fmt: skip
    s.add_argument("--result", help="with --seeded: the result name (default: the saved "
                                    "threshold's, else the newest with neuron scores)")  # fmt: skip
    s.add_argument("--channel", type=int, default=1, help="the membrane class (default 1)")
    s.add_argument("--memory-gb", type=float, default=2.0,
                   help="working memory to stay within; sets the block shape (default 2)")  # fmt: skip
    s.add_argument("--block", type=int, nargs=3, metavar=("Z", "Y", "X"),
                   help="block shape instead of --memory-gb's")  # fmt: skip
    s.add_argument("--halo", type=int, default=24,
                   help="voxels of context around each watershed block (default 24)")  # fmt: skip
    s.add_argument("--overwrite", action="store_true",
                   help="start again over an existing segmentation")  # fmt: skip
    _add_worker_options(s)
    s.add_argument("--debug", action="store_true")

    v = sub.add_parser("view", help="open volumes in neuroglancer as aligned layers")
    v.add_argument("volumes", nargs="+", metavar="PATH[:KEY]",
                   help="HDF5 file or zarr/OME-Zarr/N5 folder, ':KEY' naming the array "
                        "(predict's and segment's outputs need none)")  # fmt: skip
    v.add_argument("--segmentation", action="append", default=[], metavar="PATH[:KEY]",
                   help="show this volume as a segmentation (ids coloured; default: integer "
                        "volumes wider than a byte and OME-Zarr labels)")  # fmt: skip
    v.add_argument("--voxel-size", type=float, nargs=3, metavar=("Z", "Y", "X"),
                   help="voxel size in nm of volumes that declare none (default: the first "
                        "one declared by another volume, else 1)")  # fmt: skip
    v.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default 127.0.0.1; loopback only: the viewer has "
                        "no login, reach it from elsewhere through ssh -L)")  # fmt: skip
    v.add_argument("--port", type=int, default=0, help="port (default: a free one)")

    g = sub.add_parser("demo-data", help="write the synthetic demo data set")
    g.add_argument("dir", nargs="?", default="data")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--overwrite", action="store_true")
    return parser


_LOG_FORMAT = "[%(asctime)s] [%(levelname)s] %(message)s"


class _OneLineFormatter(logging.Formatter):
    """The terminal's format: a logged exception's traceback only with ``--debug`` (train.log
    always has it)."""

    def __init__(self, debug: bool) -> None:
        super().__init__(_LOG_FORMAT, datefmt="%H:%M:%S")
        self.debug = debug

    def format(self, record: logging.LogRecord) -> str:
        if self.debug or not record.exc_info:
            return super().format(record)
        saved = record.exc_info, record.exc_text
        record.exc_info = record.exc_text = None
        try:
            return super().format(record)
        finally:
            record.exc_info, record.exc_text = saved


def setup_logging(log_file: Path | None = None, debug: bool = False, quiet: bool = False) -> None:
    """Log to stderr and, for a run, to its train.log; ``quiet`` (ranks > 0) logs warnings only.

    Tracebacks of logged exceptions go to train.log, and to stderr only with ``debug``.
    """
    log = logging.getLogger("voxelboard")
    log.setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)
    log.propagate = False
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(_OneLineFormatter(debug))
    log.addHandler(stderr)
    if log_file is not None:
        _add_log_file(log_file)


def _add_log_file(log_file: Path) -> logging.Handler:
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter(_LOG_FORMAT, datefmt="%H:%M:%S"))
    logging.getLogger("voxelboard").addHandler(handler)
    return handler


def _hold_log() -> logging.handlers.MemoryHandler:
    """Keep the log records of the set-up until the run directory (and its train.log) exists."""
    held = logging.handlers.MemoryHandler(10**6, flushLevel=logging.CRITICAL + 1, target=None)
    logging.getLogger("voxelboard").addHandler(held)
    return held


def _release_log(held: logging.handlers.MemoryHandler, run_dir: Path) -> None:
    """Write the held records into ``run_dir``'s train.log, which then logs on."""
    from trainer import runs

    logging.getLogger("voxelboard").removeHandler(held)
    held.setTarget(_add_log_file(run_dir / runs.LOG_FILE))
    held.flush()
    held.close()


def cmd_train(args: argparse.Namespace) -> int:
    from trainer import runs
    from trainer.config import ConfigError, ExperimentConfig
    from trainer.distributed import env_world_size, from_env

    problem = _nodes_problem(args)
    if problem:
        print(f"run.py train: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if (args.nproc > 1 or args.nnodes > 1) and env_world_size() <= 1:
        return _train_distributed(args)
    dist = from_env(args.device)
    try:
        if args.resume:
            cfg = _config_for_resume(Path(args.resume))
        elif args.config:
            cfg = ExperimentConfig(args.config, use_existing_dir=args.use_existing_dir)
        else:
            raise ConfigError("train needs a CONFIG file or --resume RUN_DIR")
        overrides = {k: v for k, v in dict(n_steps=args.n_steps, batch_size=args.batch_size,
                     lr=args.lr, max_runtime=args.max_runtime, save_name=args.save_name,
                     save_path=args.save_path).items() if v is not None}  # fmt: skip
        if args.resume:
            overrides.pop("save_name", None)
            overrides.pop("save_path", None)
        if overrides:
            cfg.apply_overrides(**overrides)
        trial = None
        if dist is None and (args.resume or args.use_existing_dir):
            trial = _sweep_trial(cfg, Path(args.resume) if args.resume else cfg.planned_run_dir())
        # a new single-process run gets its directory from the trainer once model and data
        # are set up, so a data error leaves no run behind
        defer_dir = dist is None and not args.resume and not args.use_existing_dir
        if dist is not None:
            run_dir, trial = _agree_run_dir(args, cfg, dist)
        elif args.resume:
            run_dir = Path(cfg.run_dir)
        elif defer_dir:
            run_dir = cfg.planned_run_dir()
            if run_dir.exists():
                raise ConfigError(
                    f"{cfg.exp_file}: run directory {run_dir} already exists; choose another "
                    "save_name or pass use_existing_dir=True / --resume"
                )
        else:
            run_dir = Path(cfg.make_dir())
    except ConfigError as e:
        print(f"run.py train: {e}", file=sys.stderr)
        if args.debug:
            traceback.print_exc()
        return EXIT_USAGE

    is_main = dist is None or dist.is_main
    log_file = run_dir / runs.LOG_FILE if is_main and not defer_dir else None
    setup_logging(log_file, args.debug, quiet=not is_main)
    held = _hold_log() if defer_dir else None
    import trainer as package
    from trainer.trainer import DivergedError

    try:
        trainer_class = getattr(package, cfg.trainer_class or "Trainer")
        trainer = trainer_class(
            cfg, device=args.device, resume=bool(args.resume), dist=dist, trial=trial
        )
    except Exception as e:
        code = (
            EXIT_USAGE if isinstance(e, ValueError | FileNotFoundError | TypeError) else EXIT_FAILED
        )
        if held is not None and cfg.run_dir is None:
            # nothing was made: the terminal is the only place to say it, in one line
            print(f"run.py train: {e}", file=sys.stderr)
            if args.debug:
                traceback.print_exc()
            return code
        if held is not None:
            run_dir = Path(cfg.run_dir)
            _release_log(held, run_dir)
        # set-up failed before the loop could report: say so in the status file
        logging.getLogger("voxelboard").error("Set-up failed: %s", e, exc_info=True)
        if is_main:
            _mark_failed(run_dir, f"{type(e).__name__}: {e}")
        print(f"run.py train: {e}", file=sys.stderr)
        return code
    if held is not None:
        run_dir = Path(cfg.run_dir)
        _release_log(held, run_dir)
    ended_cleanly = all_ended = False
    try:
        trainer.run()
        ended_cleanly = True
    except DivergedError as e:
        print(f"run.py train: diverged: {e}", file=sys.stderr)
        return EXIT_DIVERGED
    except Exception as e:
        if is_main:
            # the trainer writes the final state itself; this retries if the disk was full then
            _mark_failed(
                run_dir, str(e) if isinstance(e, runs.RunWriteError) else f"{type(e).__name__}: {e}"
            )
        print(f"run.py train: failed: {e} (log in {run_dir / runs.LOG_FILE})", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if dist is not None:
            # the model (DistributedDataParallel) holds the process group: freed here, gloo's
            # threads are joined now instead of being cut off by the interpreter's exit
            del trainer
            gc.collect()
            all_ended = dist.close(together=ended_cleanly)
    _mark_rank_done(all_ended)
    return EXIT_OK


#: set by a node's supervisor (``_train_distributed``): the folder where each of its ranks
#: leaves a mark once its training loop has ended cleanly (finished, stopped or pruned)
RANKS_DONE_ENV = "VOXELBOARD_RANKS_DONE"
#: a mark's text when every rank of the run, on every node, ended cleanly with it
ALL_RANKS_ENDED = "all ranks ended"


def _mark_rank_done(all_ended: bool) -> None:
    folder = os.environ.get(RANKS_DONE_ENV)
    if folder:
        Path(folder, os.environ.get("LOCAL_RANK", "0")).write_text(
            ALL_RANKS_ENDED if all_ended else "this rank ended"
        )


def _wait_for_torchrun(
    child, marks: Path, nproc: int, grace: float = 20.0, store: tuple[str, int] | None = None
) -> tuple[int, bool]:
    """torchrun's exit code and whether all ``nproc`` local ranks ended cleanly.

    Once this node's ranks have ended cleanly, its torchrun agent has nothing left to do but
    its exit barrier with the other nodes' agents. That barrier can fail (exit 1) or hang: on
    a node other than the rendezvous host when the host's agent, which holds the store
    (``store``, its host and port), has already exited; on the host when another node's agent
    was stopped by a signal and never comes. So the agent is terminated once its ranks have
    met every other rank at the end (their marks say so: the whole run's work is done), or
    the store refuses connections, and at the latest ``grace`` seconds after its ranks ended.
    A clean end of the ranks is what counts."""
    import subprocess
    import time

    done_since = None
    while True:
        try:
            return child.wait(timeout=0.5), _all_done(marks, nproc)
        except subprocess.TimeoutExpired:
            pass
        if done_since is None and _all_done(marks, nproc):
            done_since = time.monotonic()
            if _all_ended(marks, nproc):  # a moment for the agent to leave on its own
                grace = min(grace, 2.0)
        if done_since is not None and (
            time.monotonic() - done_since > grace or (store is not None and _store_gone(store))
        ):
            child.terminate()
            try:
                return child.wait(timeout=10), True
            except subprocess.TimeoutExpired:
                child.kill()
                return child.wait(), True


def _store_gone(store: tuple[str, int]) -> bool:
    """Whether the rendezvous store's port refuses connections (its agent has exited)."""
    import socket

    try:
        socket.create_connection(store, timeout=1.0).close()
    except ConnectionRefusedError:
        return True
    except OSError:  # a timeout or an unreachable host: not known to be gone
        return False
    return False


def _all_done(marks: Path, nproc: int) -> bool:
    return all((marks / str(r)).exists() for r in range(nproc))


def _all_ended(marks: Path, nproc: int) -> bool:
    try:
        return all((marks / str(r)).read_text() == ALL_RANKS_ENDED for r in range(nproc))
    except OSError:
        return False


def _nodes_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with ``--nproc``/``--nnodes``/``--node-rank``/``--rdzv-endpoint``, if anything."""
    from trainer.distributed import parse_endpoint

    if args.nproc < 1:
        return f"--nproc {args.nproc}: expected 1 or more processes"
    if args.nnodes < 1:
        return f"--nnodes {args.nnodes}: expected 1 or more machines"
    if not 0 <= args.node_rank < args.nnodes:
        return f"--node-rank {args.node_rank}: expected 0 to {args.nnodes - 1} (--nnodes {args.nnodes})"
    if args.nnodes > 1:
        if not args.rdzv_endpoint:
            return (f"--nnodes {args.nnodes} needs --rdzv-endpoint HOST:PORT, the same on every "
                    "node (node 0's name and a free port on it)")  # fmt: skip
        try:
            parse_endpoint(args.rdzv_endpoint)
        except ValueError as e:
            return str(e)
    return None


def _agree_run_dir(args: argparse.Namespace, cfg, dist):
    """Every rank's run directory and sweep trial: the one ``--resume`` or node 0's ``run.py``
    named (``--use-existing-dir``), else the one rank 0 makes (``torchrun`` by hand)."""
    from trainer.config import ConfigError
    from trainer.distributed import agree_run_dir

    if args.resume:
        named = str(Path(args.resume).absolute())
    elif args.use_existing_dir:
        named = str(cfg.planned_run_dir())
    else:
        named = None
    try:
        run_dir = Path(agree_run_dir(dist, named, cfg.make_dir))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    trial = _sweep_trial(cfg, run_dir)  # every rank trains with the trial's values
    if dist.is_main and named and not args.resume:
        # rank 0 may run on another node than the one that made the directory: it records
        # its own resolved config there (the same on every node: same config and overrides)
        cfg.save_path, cfg.save_name, cfg.use_existing_dir = str(run_dir.parent), run_dir.name, True
        cfg.make_dir()
    cfg.run_dir = run_dir
    return run_dir, trial


def _mark_failed(run_dir: Path, error: str) -> None:
    """Write state failed unless this trainer process already wrote a final state.

    Called only in the trainer process (``cmd_train``), the one writer of ``status.json``;
    a final state left by an earlier attempt (a resumed run) is overwritten.
    """
    import os
    import time

    from trainer import runs

    status = runs.read_status(run_dir) or runs.Status()
    if status.state in runs.FINAL_STATES and status.pid == os.getpid():
        return
    status.state, status.error, status.pid = "failed", error, os.getpid()
    status.heartbeat = status.extra["ended"] = time.time()
    try:
        runs.write_status(run_dir, status)
    except OSError as e:  # a full disk: the error still reaches the terminal and train.log
        logging.getLogger("voxelboard").error(
            "The failure could not be recorded in %s: %s",
            run_dir / runs.STATUS_FILE,
            runs.os_error_in_words(e),
        )


def _train_distributed(args: argparse.Namespace) -> int:
    """``--nproc N``: make the run directory here, then start N ranks with torchrun.

    This process stays as the run's supervisor: it forwards SIGTERM/SIGINT to torchrun and
    records torchrun's exit code in ``supervisor.json`` (never in ``status.json``, which
    rank 0 writes); readers show a non-zero exit without a final state as failed.

    With ``--nnodes M`` this runs on each node: node 0 makes the directory and keeps the
    record; the other nodes make and write nothing, their ranks learn the directory from
    node 0's ranks (``trainer.distributed.agree_run_dir``).
    """
    import shutil
    import signal
    import subprocess
    import tempfile
    import time

    from trainer import runs
    from trainer.config import ConfigError, ExperimentConfig
    from trainer.distributed import torchrun_argv

    argv = ["--device", args.device] if args.device else []
    run_dir = None  # known to node 0 (and to every node on --resume)
    try:
        if args.resume:
            run_dir = Path(args.resume)
            argv += ["--resume", str(run_dir)]
        elif args.node_rank > 0:
            if not args.config:
                raise ConfigError("train needs a CONFIG file or --resume RUN_DIR")
            ExperimentConfig(args.config)  # a bad config fails here, before the rendezvous
            argv.append(args.config)
            if args.use_existing_dir and args.save_name:  # the same directory as node 0's
                argv += ["--save-path", args.save_path or ".", "--save-name", args.save_name,
                         "--use-existing-dir"]  # fmt: skip
        else:
            if not args.config:
                raise ConfigError("train needs a CONFIG file or --resume RUN_DIR")
            cfg = ExperimentConfig(args.config, use_existing_dir=args.use_existing_dir)
            named = {"save_name": args.save_name, "save_path": args.save_path}
            named = {k: v for k, v in named.items() if v is not None}
            if named:
                cfg.apply_overrides(**named)
            run_dir = Path(cfg.make_dir())
            argv += [args.config, "--save-path", str(run_dir.parent), "--save-name", run_dir.name]
            argv.append("--use-existing-dir")
    except ConfigError as e:
        print(f"run.py train: {e}", file=sys.stderr)
        return EXIT_USAGE
    overrides = {"--n-steps": args.n_steps, "--batch-size": args.batch_size, "--lr": args.lr,
                 "--max-runtime": args.max_runtime}  # fmt: skip
    for flag, value in overrides.items():
        if value is not None:
            argv += [flag, str(value)]
    if args.debug:
        argv.append("--debug")
    cmd = torchrun_argv(sys.executable, [str(Path(__file__).resolve()), "train", *argv],
                        args.nproc, args.nnodes, args.node_rank, args.rdzv_endpoint)  # fmt: skip
    # this process is not the trainer: it records the ranks' fate in its own file (node 0's
    # supervisor only: one writer per file)
    recording = args.node_rank == 0
    record = runs.LauncherRecord("torchrun", pid=os.getpid(), started=time.time())
    if recording:
        runs.write_launcher_record(run_dir, record, runs.SUPERVISOR_FILE)
    marks = Path(tempfile.mkdtemp(prefix="voxelboard-ranks-"))
    child = subprocess.Popen(cmd, env={**os.environ, RANKS_DONE_ENV: str(marks)})

    stop_asked = []

    def forward(signum: int, frame: object) -> None:
        stop_asked.append(signum)
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        store = None
        if args.nnodes > 1 and args.node_rank != 0:
            from trainer.distributed import parse_endpoint

            store = parse_endpoint(args.rdzv_endpoint)
        rc, ranks_clean = _wait_for_torchrun(child, marks, args.nproc, store=store)
    finally:
        shutil.rmtree(marks, ignore_errors=True)
    record.exit_code, record.ended = rc, time.time()
    # torchrun ends with 1 when it was signalled, or when another node's agent (the
    # rendezvous store's host) left first, even after its ranks ended cleanly
    stopped = ranks_clean or (
        bool(stop_asked) and (not recording or _stopped_since(run_dir, record.started))
    )
    if rc != 0 and not stopped:
        record.error = (f"a training process failed (torchrun exit code {rc}); "
                        "see console.log or the terminal for the rank's error")  # fmt: skip
    if not recording:
        if rc != 0 and not stopped:
            print(f"run.py train: {record.error}", file=sys.stderr)
        return EXIT_FAILED if rc != 0 and not stopped else EXIT_OK
    try:
        runs.write_launcher_record(run_dir, record, runs.SUPERVISOR_FILE)
    except OSError as e:  # a full disk: the exit code still reaches the terminal
        print(f"run.py train: cannot record the exit in {runs.SUPERVISOR_FILE}: {e}",
              file=sys.stderr)  # fmt: skip
    return EXIT_FAILED if rc != 0 and not stopped else EXIT_OK


def _stopped_since(run_dir: Path, started: float) -> bool:
    """Whether rank 0 wrote state ``stopped`` in this attempt (not an earlier one's)."""
    from trainer import runs

    status = runs.read_status(run_dir)
    return status is not None and status.state == "stopped" and status.heartbeat >= started


def _sweep_trial(cfg, run_dir: Path):
    """A sweep trial's values applied to ``cfg`` and its pruning reporter; ``None`` for a run
    without ``trial.json`` (every run outside a sweep)."""
    from trainer.config import ConfigError
    from trainer.runs.sweeps import TRIAL_FILE, read_trial, study_path, sweep_dir
    from trainer.sweeps import TrialReporter, apply_params, parse_sweep

    record = read_trial(run_dir)
    if record is None:
        return None
    try:
        spec = parse_sweep(cfg)
        apply_params(cfg, spec.decode(record["drawn"]))
        folder = sweep_dir(run_dir.parent, record["sweep"])
        number = int(record["number"])
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(
            f"{run_dir / TRIAL_FILE}: not a trial of this config's sweep ({e}); "
            "start the run again from its sweep"
        ) from e
    cfg.check_config()
    return TrialReporter(study_path(folder), record["sweep"], number, spec)


def _config_for_resume(run_dir: Path):
    from trainer.config import ConfigError, ExperimentConfig
    from trainer.runs import config_copy

    copy = config_copy(run_dir) if run_dir.is_dir() else None
    if copy is None:
        raise ConfigError(
            f"--resume {run_dir}: not a run directory with a config copy (0-<config>.py); "
            "give the folder of a run started by VoxelBoard"
        )
    cfg = ExperimentConfig(str(copy), use_existing_dir=True)
    cfg.save_name = run_dir.name
    cfg.save_path = str(run_dir.parent)
    cfg.run_dir = run_dir
    return cfg


def cmd_evaluate(args: argparse.Namespace) -> int:
    setup_logging(None, args.debug)
    if args.store_exact and args.mode != "exact":
        print(
            "run.py evaluate: --store-exact keeps the counts at every distinct score, which only "
            f"--mode exact counts (got --mode {args.mode}); add --mode exact",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from trainer.evaluation import evaluate_run, format_report

    try:
        from trainer.segmentation import ELEKTRONN2_GRID

        kwargs: dict = {"convention": args.rand_convention}
        if args.seg_grid == "elektronn2":
            kwargs["grid"] = ELEKTRONN2_GRID
        if args.ignore_labels is not None:
            kwargs["ignore_labels"] = args.ignore_labels
        results = evaluate_run(args.run_dir, snapshot=args.snapshot, split=args.split,
                               mode=args.mode, device=args.device, name=args.name,
                               instances=args.instances, neuron_kwargs=kwargs,
                               store_exact=args.store_exact)  # fmt: skip
    except (ValueError, FileNotFoundError) as e:
        print(f"run.py evaluate: {e}", file=sys.stderr)
        if args.debug:
            traceback.print_exc()
        return EXIT_USAGE
    from trainer import runs
    from trainer.evaluation.run import default_snapshot

    name = args.name or Path(args.snapshot or default_snapshot(args.run_dir) or "").stem
    neurons = runs.read_neurons(runs.result_path(args.run_dir, name)) if args.instances else []
    print(format_report(results, neurons))
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    setup_logging(None, args.debug)
    from trainer.evaluation import load_run
    from trainer.predictions import DiskFullError, check_input, predict_to_disk, voxel_grid

    def show(done: int, total: int, seconds: float) -> None:
        eta = seconds / done * (total - done)
        print(f"\rblock {done}/{total} ({100 * done // total}%), {seconds:.0f} s, "
              f"ETA {eta:.0f} s", end="" if done < total else "\n", file=sys.stderr, flush=True)  # fmt: skip

    if args.workers is not None or args.backend == "slurm":
        from trainer.distributed_predict import prepare_predict

        spec = {"run_dir": args.run_dir, "input": args.input, "key": args.key,
                "output": args.output, "output_key": args.output_key, "snapshot": args.snapshot,
                "dtype": args.dtype, "tile": args.block, "voxel_size": args.voxel_size,
                "padding": None if args.crop else args.pad_mode}  # fmt: skip
        return _block_job(args, "predict", lambda job: prepare_predict(spec, job, args.overwrite))
    try:
        volume = check_input(args.input, args.key)
        run = load_run(args.run_dir, snapshot=args.snapshot, device=args.device)
        grid = voxel_grid(volume, args.voxel_size, run.config.voxel_size)
        with _process_job(args, "predict", args.output_key) as job:

            def progress(done: int, total: int, seconds: float) -> None:
                show(done, total, seconds)
                job.progress("predict", done, total)

            out = predict_to_disk(run.model, volume, args.output, key=args.output_key,
                                  dtype=args.dtype, tile_shape=args.block, progress=progress,
                                  padding=None if args.crop else args.pad_mode, grid=grid,
                                  provenance=_provenance(args.run_dir, run),
                                  overwrite=args.overwrite)  # fmt: skip
    except DiskFullError as e:
        print(f"\nrun.py predict: {e}", file=sys.stderr)
        return EXIT_FAILED
    except (ValueError, FileNotFoundError) as e:
        print(f"run.py predict: {e}", file=sys.stderr)
        if args.debug:
            traceback.print_exc()
        return EXIT_USAGE
    print(f"probabilities in {out}['{args.output_key}']")
    return EXIT_OK


def cmd_segment(args: argparse.Namespace) -> int:
    setup_logging(None, args.debug)
    from trainer.prediction_store import DiskFullError
    from trainer.predictions import read_prediction
    from trainer.segment_volume import (
        LABELS_KEY,
        label_location,
        release_freed_memory,
        segment_to_disk,
        setting_from_run,
    )
    from trainer.volumes import VolumeError

    def show(name: str, done: int, total: int, seconds: float) -> None:
        eta = seconds / max(done, 1) * (total - done)
        print(f"\r{name}: block {done}/{total} ({100 * done // total}%), {seconds:.0f} s, "
              f"ETA {eta:.0f} s ", end="" if done < total else "\n", file=sys.stderr, flush=True)  # fmt: skip

    try:
        if not Path(args.run_dir).is_dir():
            raise ValueError(f"{args.run_dir}: no such run directory")
        setting = setting_from_run(args.run_dir, args.threshold, args.seeded, args.result)
        volume, record = read_prediction(args.prob, args.key)
        name = label_location(args.prob, args.output)
        print(f"segmenting {volume.name} ({setting.method}, from {setting.source})",
              file=sys.stderr)  # fmt: skip
        if args.workers is not None or args.backend == "slurm":
            from trainer.distributed_segment import prepare_segment

            spec = {"prob": args.prob, "key": args.key, "output": args.output,
                    "channel": args.channel, "memory_gb": args.memory_gb, "block": args.block,
                    "halo": args.halo, "label_name": name}  # fmt: skip
            return _block_job(args, "segment",
                              lambda job: prepare_segment(spec, setting, job, args.overwrite))  # fmt: skip
        if AS_COMMAND:  # process-wide: not when a test or a caller runs main() in its process
            release_freed_memory()  # --memory-gb is a peak: freed blocks go back to the OS
        with _process_job(args, "segment", LABELS_KEY) as job:

            def progress(step: str, done: int, total: int, seconds: float) -> None:
                show(step, done, total, seconds)
                job.progress(step, done, total)

            out = segment_to_disk(volume, record, args.output, setting, channel=args.channel,
                                  memory_gb=args.memory_gb, block=args.block, halo=args.halo,
                                  label_name=name, progress=progress, overwrite=args.overwrite)  # fmt: skip
        if name is not None:
            from trainer.segment_volume import register_label

            register_label(args.prob, name)
    except DiskFullError as e:
        print(f"\nrun.py segment: {e}", file=sys.stderr)
        return EXIT_FAILED
    except (ValueError, FileNotFoundError, VolumeError) as e:
        print(f"run.py segment: {e}", file=sys.stderr)
        if args.debug:
            traceback.print_exc()
        return EXIT_USAGE
    except OSError as e:
        from trainer.prediction_store import disk_full, free_text

        if not disk_full(e):
            raise
        print(f"\nrun.py segment: no space left on device writing {args.output} "
              f"({free_text(Path(args.output))} free); "
              "free space and run the same command again: it resumes after the blocks done",
              file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    print(f"neuron labels in {out}['0']")
    return EXIT_OK


def _provenance(run_dir: str, run: object) -> dict:
    """What ``run.py predict`` records about the run it predicts with."""
    from trainer.distributed_predict import run_provenance

    return run_provenance(run_dir, run)


def _record_job(run_dir: str, kind: str, output: str, key: str | None, backend: str) -> None:
    """The job's record in its run directory, for the dashboard's jobs page (a run directory
    that cannot be written costs the page its row, not the job)."""
    from trainer.runs.job_records import write_job_record

    try:
        write_job_record(run_dir, kind, output, key, os.getcwd(), backend)
    except OSError as e:
        print(f"run.py {kind}: note: the jobs page will not list this job: {e}", file=sys.stderr)


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _process_job(args: argparse.Namespace, kind: str, key: str):
    """This one-process command's job folder (``trainer.process_job``), so the jobs page
    lists it; recorded in the run directory at its first block. As a command, a SIGTERM
    (the page's Stop) leaves through it, the worker file saying ``stopped``."""
    from trainer.process_job import ProcessJob

    if AS_COMMAND:  # process-wide, as release_freed_memory
        signal.signal(signal.SIGTERM, _terminated)
    return ProcessJob(args.output, kind, key, [sys.executable, *sys.argv], os.getcwd(),
                      on_start=lambda: _record_job(args.run_dir, kind, args.output, key,
                                                   "local"))  # fmt: skip


def _block_job(args: argparse.Namespace, kind: str, prepare) -> int:
    """``--workers N`` / ``--backend slurm --jobs N``: make the output and its job file
    (``prepare``), start the workers or submit the array, and follow them."""
    from app import block_jobs
    from app.security import LaunchError
    from app.slurm import Slurm, SlurmError, resources_from
    from trainer.block_claims import JobError
    from trainer.prediction_store import PredictionError

    me = f"run.py {kind}"
    slurm_backend = args.backend == "slurm"
    try:
        if slurm_backend:
            resources = resources_from({k: getattr(args, f"slurm_{k}") for k in
                                        ("partition", "account", "gpus", "cpus", "mem", "time")})  # fmt: skip
            slurm = Slurm()
            if slurm.problem():
                raise JobError(slurm.problem())
        elif args.workers < 1:
            raise PredictionError(f"--workers {args.workers}: expected 1 or more")
        job = prepare({"command": [sys.executable, *sys.argv], "cwd": os.getcwd(),
                       "backend": args.backend,
                       "device": args.device if kind == "predict" else "cpu",
                       "slurm_job_id": None})  # fmt: skip
        n, note = block_jobs.cap_jobs(args.jobs if slurm_backend else args.workers, job["steps"])
        if note:
            print(f"{me}: note: {note}", file=sys.stderr)
        block_jobs.record_backend(args.output, workers=n)
        _record_job(args.run_dir, kind, args.output, job.get("key"), args.backend)
    except JobError as e:
        print(f"{me}: {e}", file=sys.stderr)
        return EXIT_FAILED
    except (ValueError, FileNotFoundError, LaunchError) as e:
        print(f"{me}: {e}", file=sys.stderr)
        if args.debug:
            traceback.print_exc()
        return EXIT_USAGE

    shown = [""]

    def show(progress: dict) -> None:
        line = block_jobs.describe(progress)
        if line != shown[0]:
            shown[0] = line
            print(f"\r{line} ", end="", file=sys.stderr, flush=True)

    if slurm_backend:
        try:
            job_id = block_jobs.submit_array(args.output, n, resources, job.get("device"),
                                             slurm, kind)  # fmt: skip
        except SlurmError as e:
            print(f"{me}: {e}", file=sys.stderr)
            return EXIT_FAILED
        block_jobs.record_backend(args.output, slurm_job_id=job_id)
        print(f"Slurm job array {job_id}: {n} task(s) on {args.output}", file=sys.stderr)
        if not args.wait:
            return EXIT_OK
        progress = block_jobs.wait_array(args.output, job_id, n, slurm, show)
    else:
        procs = block_jobs.start_local(args.output, n, job.get("device"))
        try:
            progress = block_jobs.wait_local(args.output, procs, show)
        except KeyboardInterrupt:  # the workers are stopped by now
            print(f"\n{me}: stopped; run the same command again to go on", file=sys.stderr)
            return 130
    print(file=sys.stderr)
    if not progress.get("complete"):
        for line in block_jobs.failure_lines(args.output) or ["the workers ended early"]:
            print(f"{me}: {line}", file=sys.stderr)
        print(f"{me}: unfinished; run the same command again: it does only the blocks "
              "still missing", file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    print(f"{'probabilities' if kind == 'predict' else 'neuron labels'} in {args.output}")
    return EXIT_OK


def cmd_demo_data(args: argparse.Namespace) -> int:
    import time

    from trainer.synthetic import ensure_demo_data, ensure_demo_zarr, make_demo_data

    t0 = time.perf_counter()
    from trainer.skeletons import ensure_tracing_data, make_tracing_data

    if args.overwrite:
        demo = make_demo_data(args.dir, seed=args.seed, overwrite=True)
        make_tracing_data(args.dir, seed=args.seed, overwrite=True)
    else:
        demo = ensure_demo_data(args.dir, seed=args.seed)
        ensure_tracing_data(args.dir, seed=args.seed)
    zarr_copy = ensure_demo_zarr(demo)
    files = [*demo.raw_files, *demo.label_files, *demo.instance_files, demo.preview_file,
             Path(args.dir) / "tracing.h5",
             zarr_copy]  # fmt: skip
    print(f"demo data (seed {demo.seed}) in {Path(args.dir).resolve()}, "
          f"{time.perf_counter() - t0:.1f} s:")  # fmt: skip
    for f in files:
        print(f"  {f.name}")
    print(f"  validation cube(s): {list(demo.valid_cubes)}")
    return EXIT_OK


def cmd_sweep(args: argparse.Namespace) -> int:
    """Make (or resume) a sweep and drive it until it ends; Ctrl+C or SIGTERM stops it."""
    import os
    import signal
    import socket
    import time

    setup_logging(None, args.debug)
    from app import sweeper
    from app.launcher import Launcher
    from app.security import LaunchError
    from trainer.config import ConfigError
    from trainer.runs.sweeps import (
        DRIVER_STALE_S,
        SWEEP_FINAL_STATES,
        clear_driver,
        read_sweep,
        read_trials,
        write_driver,
    )

    resources = {k: v for k in ("partition", "account", "nodes", "gpus", "cpus", "mem", "time")
                 if (v := getattr(args, f"slurm_{k}")) is not None}  # fmt: skip
    overrides = {"n_steps": args.n_steps, "batch_size": args.batch_size, "lr": args.lr}
    try:
        runs_dir = _sweep_runs_dir(args)
        if args.resume:
            folder = sweeper.sweep_folder(runs_dir, args.resume)
        elif args.config:
            sweep_id = sweeper.create_sweep(
                runs_dir, args.config, backend=args.backend or "local",
                max_parallel=args.max_parallel, device=args.device, resources=resources,
                max_sweeps=args.max_sweeps, n_runs=args.n_runs, overrides=overrides,
            )  # fmt: skip
            folder = sweeper.sweep_folder(runs_dir, sweep_id)
        else:
            raise sweeper.SweepError("sweep needs a CONFIG file or --resume SWEEP_ID")
        record = read_sweep(folder) or {}
        launcher = Launcher(
            runs_dir, Path(record["config_source"]).parent, args.data_dir,
            backend=record.get("backend", "local"),
            max_cpu_runs=int(record.get("max_parallel", 1)), slurm_poll_s=2.0,
        )  # fmt: skip
    except (ConfigError, sweeper.SweepError, LaunchError) as e:
        print(f"run.py sweep: {e}", file=sys.stderr)
        if args.debug:
            traceback.print_exc()
        return EXIT_USAGE
    spec = sweeper.spec_of(record)
    if args.detach:
        print(record["id"], flush=True)
        return EXIT_OK
    shortened = "".join(f", {k} {v:g}" for k, v in (record.get("overrides") or {}).items())
    where = " (the config's save_path)" if args.runs_dir is None and not args.resume else ""
    print(f"sweep {record['id']}: {spec.n_runs} runs of {record['config']} ({spec.method}, "
          f"{spec.metric} {spec.goal}{shortened}), at most {record['max_parallel']} at once, "
          f"{record['backend']} backend; trials in {Path(runs_dir).absolute()}{where}; "
          f"page /sweep/{record['id']}", flush=True)  # fmt: skip
    asked = []
    handlers = {
        s: signal.signal(s, lambda *_: asked.append(1)) for s in (signal.SIGINT, signal.SIGTERM)
    }
    shown: dict[str, str] = {}
    failed_ticks = 0
    host, seen = socket.gethostname(), 0.0
    try:
        while True:
            if time.time() - seen > DRIVER_STALE_S / 3:  # a dashboard leaves the sweep to us
                seen = time.time()
                write_driver(folder, os.getpid(), host, seen)
            launcher.tick(sweeps=False)  # starts queued runs; this loop drives the sweep
            try:
                trials = sweeper.tick(launcher, folder)
                failed_ticks = 0
            except Exception as e:  # a broken sweep folder: say so, give up after a few tries
                failed_ticks += 1
                print(f"run.py sweep: {record['id']}: {type(e).__name__}: {e}", file=sys.stderr)
                if failed_ticks >= 3:
                    return EXIT_FAILED
                trials = read_trials(folder)
            for t in trials.trials:
                said = f"{t.state}" + (
                    f", {spec.metric} {t.value:.4g}" if t.value is not None else ""
                )
                if shown.get(t.run) != said:
                    shown[t.run] = said
                    print(f"  trial {t.number} ({t.run}): {said}  {t.params}", flush=True)
            if trials.state in SWEEP_FINAL_STATES:
                break
            if asked and trials.stop_requested is None:
                print("stopping the sweep: its trials get SIGTERM and keep a snapshot", flush=True)
                sweeper.stop_sweep(launcher, folder, "stopped from the command line")
            time.sleep(args.poll)
    finally:
        clear_driver(folder, os.getpid())
        for s, h in handlers.items():
            signal.signal(s, h)
    best = sweeper.summary(folder)["best_run"]
    print(f"sweep {record['id']} {trials.state}" + (f": {trials.reason}" if trials.reason else "")
          + (f"; best run {best}" if best else ""), flush=True)  # fmt: skip
    return EXIT_OK if trials.state == "finished" else EXIT_FAILED


def _sweep_runs_dir(args: argparse.Namespace) -> str:
    """Where a sweep's trials go: ``--runs-dir``, else the config's ``save_path`` (as ``run.py
    train`` puts a run there), else ``./runs`` (``--resume``)."""
    if args.runs_dir is not None:
        return args.runs_dir
    if args.resume or not args.config:
        return "runs"
    from trainer.config import ExperimentConfig

    return str(ExperimentConfig(args.config).planned_run_dir().parent)


def cmd_view(args: argparse.Namespace) -> int:
    import signal
    import threading

    from app import viewer
    from app.security import is_loopback_host

    if not is_loopback_host(args.host):
        print(f"run.py view: refusing to serve on {args.host!r}: neuroglancer's server has no "
              "login. Bind 127.0.0.1 and forward the port: ssh -L PORT:127.0.0.1:PORT HOST",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    try:
        layers = viewer.open_layers(args.volumes, args.segmentation, args.voxel_size)
    except viewer.ViewerError as e:
        print(f"run.py view: {e}", file=sys.stderr)
        return EXIT_USAGE
    viewer.set_bind_address(args.host, args.port)
    shown = viewer.show(layers)
    for layer in layers:
        print(f"  {layer.name}: {layer.kind}, {tuple(layer.data.shape)} voxels of "
              f"{layer.voxel_size} {layer.unit}, offset {layer.offset}")  # fmt: skip
    stop = threading.Event()
    # before the URL is out: whoever reads it may stop the viewer at once
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"neuroglancer: {shown.get_viewer_url()}  (Ctrl+C stops)", flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    viewer.stop()
    return EXIT_OK


def cmd_dashboard(args: argparse.Namespace) -> int:
    from app.server import serve

    return serve(host=args.host, port=args.port, runs_dir=args.runs_dir,
                 configs_dir=args.configs_dir or ["examples"], data_dir=args.data_dir, read_only=args.read_only,
                 demo=args.demo, auth_file=args.auth_file, debug=args.debug,
                 follow_links=args.follow_links, refresh_s=args.refresh, backend=args.backend, slurm_defaults={k: getattr(args, f"slurm_{k}") for k in
                 ("partition", "account", "nodes", "gpus", "cpus", "mem", "time")}) or EXIT_OK  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv.insert(0, "dashboard")
    args = build_parser().parse_args(argv)
    handler = {"dashboard": cmd_dashboard, "train": cmd_train, "sweep": cmd_sweep,
               "evaluate": cmd_evaluate,
               "predict": cmd_predict, "segment": cmd_segment, "view": cmd_view,
               "demo-data": cmd_demo_data}[args.command]  # fmt: skip
    return handler(args)


def _leave(code: int) -> None:
    """Exit. A rank of a distributed run leaves without the interpreter's finalization, once
    its logs and streams are flushed (its files are closed by then): a torch thread that asks
    for the GIL while the interpreter shuts down aborts the process ("terminate called without
    an active exception"), and torchrun then fails a run that ended cleanly."""
    if os.environ.get("TORCHELASTIC_RUN_ID") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    AS_COMMAND = True
    _leave(main())
