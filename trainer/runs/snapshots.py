"""Snapshots (``snapshots/``) and the history store's place (``history/``, ``0-history.*.html``).

``snapshots/LAST.pt`` is replaced at every history step, ``step-<N:08d>.pt`` is kept every
``param_save_it`` steps, ``FINAL.pt`` is written at the end of training, ``BEST.pt`` whenever
the config's ``best_metric`` reaches its best value so far (docs/run-directory.md).
"""

from __future__ import annotations

import os
from pathlib import Path

from trainer.runs.atomic import os_error_in_words
from trainer.runs.confine import confined

SNAPSHOT_DIR = "snapshots"
#: the snapshot replaced at every history step, and the one written at the end of training
LAST, FINAL = "LAST", "FINAL"
#: the snapshot at the best ``best_metric`` value so far (its step and value are in it)
BEST = "BEST"
SNAPSHOT_SUFFIX = ".pt"
_SUFFIX = SNAPSHOT_SUFFIX

HISTORY_DIR = "history"
#: prefix of the trainer's HTML copies of the history (``0-history.timeline.html``, ...)
HISTORY_PLOT_PREFIX = "0-history"


def history_dir(run_dir: str | os.PathLike) -> Path:
    """The run's history store (``trainer.runs.history_store`` owns its format)."""
    return Path(run_dir) / HISTORY_DIR


def history_plot_prefix(run_dir: str | os.PathLike) -> Path:
    """Path prefix of the history's HTML plots: ``<run_dir>/0-history``."""
    return Path(run_dir) / HISTORY_PLOT_PREFIX


def snapshot_names(run_dir: str | os.PathLike) -> list[str]:
    """Names of the run's snapshots: FINAL, LAST, BEST, then ``step-N`` newest first; ``[]``
    if none.

    Example:
        >>> snapshot_names(run_dir)  # doctest: +SKIP
        ['FINAL', 'LAST', 'BEST', 'step-00002000', 'step-00001000']
    """
    folder = Path(run_dir) / SNAPSHOT_DIR
    try:
        names = sorted((p.stem for p in confined(folder).glob(f"*{_SUFFIX}")), reverse=True)
    except OSError:
        return []
    fixed = [n for n in (FINAL, LAST, BEST) if n in names]
    return fixed + [n for n in names if n not in fixed and not n.startswith(".")]


def snapshot_path(run_dir: str | os.PathLike, which: str | int) -> Path:
    """Path of a snapshot: ``'LAST'``, ``'FINAL'``, ``'BEST'`` or a step number."""
    name = f"step-{which:08d}{_SUFFIX}" if isinstance(which, int) else f"{which}{_SUFFIX}"
    return Path(run_dir) / SNAPSHOT_DIR / name


def keep_snapshot_as(run_dir: str | os.PathLike, source: str, target: str) -> Path:
    """Make snapshot ``target`` (e.g. BEST) the file snapshot ``source`` (e.g. LAST) is now.

    A hard link where the file system has them (no second copy on disk: ``source`` is later
    replaced by a new file, the link keeps the old one), else a copy; either way ``target``
    is replaced atomically and is left as it was when this fails.
    """
    import shutil

    from trainer.runs.atomic import atomic_path

    src, dst = snapshot_path(run_dir, source), snapshot_path(run_dir, target)
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
    return dst


def latest_snapshot(run_dir: str | os.PathLike) -> Path | None:
    """The snapshot to resume or evaluate from: the newest of FINAL, LAST and step-N files.

    BEST is left out: it holds an earlier state of the run, not where training stands.
    """
    # one scandir, no pathlib per file: the experiments table asks this for every run
    newest: tuple[int, str] | None = None
    try:
        with os.scandir(confined(os.path.join(os.fspath(run_dir), SNAPSHOT_DIR))) as it:
            for e in it:
                name = e.name
                if name[0] == "." or not name.endswith(_SUFFIX) or name == BEST + _SUFFIX:
                    continue
                try:
                    mtime = e.stat().st_mtime_ns
                except OSError:  # removed since the scan
                    continue
                if newest is None or mtime > newest[0]:
                    newest = (mtime, e.path)
    except OSError:
        return None
    return None if newest is None else Path(newest[1])


def check_snapshot(path: str | os.PathLike, shown: str | None = None) -> str | None:
    """What is wrong with a snapshot file, cheaply (its zip directory, no unpickling), or ``None``.

    Snapshots are ``torch.save`` zip archives: a truncated file has no central directory at
    its end, a foreign one no ``data.pkl`` record. ``shown`` names the file in the message
    (default its name).
    """
    import zipfile

    path = Path(path)
    shown = shown or path.name
    try:
        with zipfile.ZipFile(confined(path)) as z:
            names = z.namelist()
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"cannot read {shown} ({os_error_in_words(e)})"
    except (zipfile.BadZipFile, ValueError, EOFError) as e:
        return f"{shown} is corrupt or truncated ({e})"
    if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return f"{shown} is not a PyTorch snapshot (no data.pkl in the archive)"
    return None
