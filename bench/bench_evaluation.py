"""Evaluation speed: VoxelBoard's exact and binned counting against scikit-learn's curves.

Run: ``python bench/bench_evaluation.py [--n-big 100000000]``. All timings on the same data in one
run; peak memory is what ``tracemalloc`` sees numpy allocate during the call (the input excluded).

Goals (issue 4): exact mode no slower than ``roc_curve`` + ``precision_recall_curve`` on 10^7 scores;
binned mode >= 10x faster than those exact curves with peak memory under 2x the input; moving the
threshold once the counts exist < 1 ms.

``evaluate()`` rows (issue 29; ``--evaluate-sizes 1e7,2e6,1e6``, ``--rounds``): ELEKTRONN2's
``evaluate(gt, preds, save_name)`` in exact mode, figure and result file included, against
scikit-learn's ``roc_curve`` + ``precision_recall_curve`` on the same scores: this tree (the
default thinned file, and ``store_exact=True``) and the code of ``--before`` (default
``31dad80``, the last revision storing every distinct score's counts, read with ``git show``
into a temporary package), interleaved round by round, best of
``--rounds``. Each round evaluates again into the same name, as a user re-running does. Also
the core under it (``evaluate_arrays``), file sizes, the AUC and AP against scikit-learn's, the
load average, and where the time of one ``evaluate()`` goes. Goals: ``evaluate()`` >= 3x
scikit-learn at 10^7 and >= 2x at 2 * 10^6; files <= 2 MB.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.metrics import auc, precision_recall_curve, roc_curve

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.curves import stored_curves  # noqa: E402
from trainer.evaluation import evaluate  # noqa: E402
from trainer.evaluation.figures import performance_figure, write_html  # noqa: E402
from trainer.evaluation.reference import _grid_choice  # noqa: E402
from trainer.metrics import BinnedAccumulator, evaluate_arrays  # noqa: E402
from trainer.runs import write_split  # noqa: E402


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 scores and int8 labels (10 % positives), generated in chunks to stay lean."""
    rng = np.random.default_rng(seed)
    gt = np.empty(n, np.int8)
    s = np.empty(n, np.float32)
    step = 10_000_000
    for i in range(0, n, step):
        m = min(step, n - i)
        g = rng.random(m, dtype=np.float32) < 0.1
        gt[i : i + m] = g
        s[i : i + m] = np.clip(0.3 * g + 0.7 * rng.random(m, dtype=np.float32), 0, 1)
    return gt, s


def timed(fn, *args, **kwargs):
    """(result, seconds, peak traced bytes) of one call."""
    tracemalloc.start()
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    dt = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, dt, peak


def sklearn_curves(gt: np.ndarray, s: np.ndarray) -> None:
    roc_curve(gt, s, drop_intermediate=False)
    precision_recall_curve(gt, s)


def binned_streaming(gt: np.ndarray, s: np.ndarray, n_bins: int = 10_000):
    acc = BinnedAccumulator(n_bins=n_bins, nll=False)
    step = 10_000_000  # cube by cube, as cubes read from h5 would arrive
    for i in range(0, gt.size, step):
        acc.add(gt[i : i + step], s[i : i + step])
    return acc.result()


def threshold_move_cost(res, n: int = 2000) -> float:
    ts = np.random.default_rng(1).random(n)
    t = time.perf_counter()
    for x in ts:
        res.at(float(x))
    return (time.perf_counter() - t) / n


def load_before(ref: str, into: Path) -> object | None:
    """The ``trainer`` package of git revision ``ref`` as package ``vb_before`` (its absolute
    imports rewritten), or ``None`` (with a line saying why) where git cannot give it."""
    try:
        names = subprocess.run(
            ["git", "ls-tree", "-r", "--name-only", ref, "trainer"],
            cwd=ROOT, check=True, capture_output=True, text=True,
        ).stdout.split()  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"(no 'before' rows: git cannot list {ref}:trainer: {e})")
        return None
    for name in names:
        if not name.endswith(".py"):
            continue
        src = subprocess.run(
            ["git", "show", f"{ref}:{name}"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout
        src = re.sub(r"(?<![.\w])trainer(?=\.|\s+import\b)", "vb_before", src)
        out = into / "vb_before" / Path(name).relative_to("trainer")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(src)
    sys.path.insert(0, str(into))
    return importlib.import_module("vb_before.evaluation")


def sklearn_areas(gt: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """ROC AUC and AP from scikit-learn's two curves (the timed calls)."""
    fpr, tpr, _ = roc_curve(gt, s, drop_intermediate=False)
    precision, recall, _ = precision_recall_curve(gt, s)
    return float(auc(fpr, tpr)), float(-np.sum(np.diff(recall) * precision[:-1]))


def file_size(prefix: Path, suffix: str) -> str:
    try:
        return f"{(prefix.parent / (prefix.name + suffix)).stat().st_size / 2**20:7.2f} MiB"
    except OSError:
        return "      -    "


def evaluate_rows(sizes: list[int], rounds: int, before_ref: str) -> None:
    """The ``evaluate()`` rows of issue 29's table, this tree against ``before_ref``."""
    tmp = Path(tempfile.mkdtemp(prefix="bench_evaluate_"))
    before = load_before(before_ref, tmp / "src") if before_ref else None
    print(
        f"\nevaluate() in exact mode against scikit-learn; best of {rounds} interleaved rounds; "
        f"before = {before_ref or '-'}"
    )
    for n in sizes:
        evaluate_row(n, rounds, before, tmp)


def evaluate_row(n: int, rounds: int, before: object | None, tmp: Path) -> None:
    """One size's rows: each variant timed round by round, best of ``rounds``."""
    gt, s = make_data(n, seed=3)
    load0 = os.getloadavg()
    runs_: dict[str, Callable[[], object]] = {
        "sklearn roc_curve + precision_recall_curve": lambda: sklearn_areas(gt, s),
        "evaluate() now (thinned file)": lambda: evaluate(gt, s, tmp / "now"),
        "evaluate() now, store_exact=True": lambda: evaluate(
            gt, s, tmp / "exact", store_exact=True
        ),
        "evaluate_arrays() now": lambda: evaluate_arrays(gt, s),
    }
    if before is not None:
        runs_["evaluate() before"] = lambda: before.evaluate(gt, s, tmp / "before")
        runs_["evaluate_arrays() before"] = lambda: before.evaluate_arrays(gt, s)
    best = dict.fromkeys(runs_, float("inf"))
    out: dict[str, tuple[float, float | None] | None] = {}
    for _ in range(rounds):
        for name, fn in runs_.items():
            t = time.perf_counter()
            r = fn()
            best[name] = min(best[name], time.perf_counter() - t)
            out[name] = areas_of(r)  # the result itself goes: its arrays would crowd memory
            del r
    load1 = os.getloadavg()
    t_sk = best["sklearn roc_curve + precision_recall_curve"]
    sk_auc, sk_ap = out["sklearn roc_curve + precision_recall_curve"]  # type: ignore[misc]
    print(
        f"\nn = {n:.0e} float32 scores, int8 labels; load average before "
        f"{' '.join(f'{x:.2f}' for x in load0)}, after {' '.join(f'{x:.2f}' for x in load1)}"
    )
    files = {
        "evaluate() now (thinned file)": tmp / "now",
        "evaluate() now, store_exact=True": tmp / "exact",
        "evaluate() before": tmp / "before",
    }
    for name, t in best.items():
        row = f"  {name:44s} {t:8.3f} s"
        if not name.startswith("sklearn"):
            row += f"   sklearn / this = {t_sk / t:5.2f}x"
        areas = out[name]
        if areas is not None and not name.startswith("sklearn"):
            row += f"   AUC - sklearn's {areas[0] - sk_auc:+.1e}"
            if areas[1] is not None:
                row += f"   AP - sklearn's {areas[1] - sk_ap:+.1e}"
        if name in files:
            row += f"   .h5 {file_size(files[name], '.h5')}"
            row += f"   .html {file_size(files[name], '.performance.html')}"
        print(row)
    if before is not None:
        again_into_old(gt, s, tmp, rounds)
    breakdown(gt, s, tmp / "parts", rounds)


def again_into_old(gt: np.ndarray, s: np.ndarray, tmp: Path, rounds: int) -> None:
    """``evaluate()`` of this tree into the name the 'before' code wrote (its old, large file
    there each time: a copy made outside the timing): nothing of the old split is read back."""
    old = tmp / "before.h5"
    if not old.is_file():
        return
    best = float("inf")
    for _ in range(rounds):
        shutil.copyfile(old, tmp / "into_old.h5")
        t = time.perf_counter()
        evaluate(gt, s, tmp / "into_old")
        best = min(best, time.perf_counter() - t)
    print(
        f"  {'evaluate() now into the before file':44s} {best:8.3f} s   (the old file: "
        f"{old.stat().st_size / 2**20:.1f} MiB, replaced by "
        f"{(tmp / 'into_old.h5').stat().st_size / 2**20:.2f} MiB)"
    )


def areas_of(r: object) -> tuple[float, float | None] | None:
    """``(ROC AUC, AP or None)`` of what a timed call returned."""
    if isinstance(r, tuple) and len(r) == 3:  # evaluate(): (perf, roc_auc, thresh)
        return float(r[1]), None
    if isinstance(r, tuple) and len(r) == 2:  # sklearn_areas
        return r  # type: ignore[return-value]
    if hasattr(r, "roc_auc"):
        return r.roc_auc, r.average_precision  # type: ignore[attr-defined]
    return None


def breakdown(gt: np.ndarray, s: np.ndarray, prefix: Path, rounds: int) -> None:
    """Where one ``evaluate()`` of this tree spends its time (each part's best of ``rounds``)."""
    parts = [float("inf")] * 4
    for _ in range(rounds):
        t0 = time.perf_counter()
        res = evaluate_arrays(gt, s)
        perf, res = _grid_choice(res, None, None)
        t1 = time.perf_counter()
        stored = stored_curves(res)
        t2 = time.perf_counter()
        fig = performance_figure(stored.thinned, perf=perf)
        write_html(str(prefix) + ".performance.html", fig)
        t3 = time.perf_counter()
        write_split(str(prefix) + ".h5", "valid", stored)
        t4 = time.perf_counter()
        parts = [min(a, b) for a, b in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3))]
        k, kept = res.thresholds.size, stored.thinned.thresholds.size
        del res, stored
    print(
        f"  one evaluate() now, each part's best: evaluate_arrays {parts[0]:.3f} s, thinning + "
        f"presets + binned {parts[1]:.3f} s, figure + HTML {parts[2]:.3f} s, h5 write "
        f"{parts[3]:.3f} s ({k:,} thresholds -> {kept:,} stored)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--n-big", type=int, default=100_000_000, help="0 to skip")
    ap.add_argument(
        "--evaluate-sizes",
        default="1e7,2e6,1e6",
        help="score counts of the evaluate() rows, comma-separated ('' to skip)",
    )
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the evaluate() rows")
    ap.add_argument("--before", default="31dad80", help="git revision of the 'before' rows")
    ap.add_argument("--only-evaluate", action="store_true", help="only the evaluate() rows")
    args = ap.parse_args()
    mb = 1e-6
    sizes = [int(float(x)) for x in args.evaluate_sizes.split(",") if x.strip()]
    if sizes:
        evaluate_rows(sizes, args.rounds, args.before)
    if args.only_evaluate:
        return
    print()

    gt, s = make_data(args.n)
    input_bytes = gt.nbytes + s.nbytes
    print(f"n = {args.n:.0e} float32 scores + int8 labels = {input_bytes * mb:.0f} MB input")
    _, t_sk, m_sk = timed(sklearn_curves, gt, s)
    print(f"sklearn roc_curve + precision_recall_curve: {t_sk:8.3f} s  peak {m_sk * mb:7.0f} MB")
    exact, t_ex, m_ex = timed(evaluate_arrays, gt, s, mode="exact", nll=False)
    print(
        f"exact   (all {exact.thresholds.size} thresholds): {t_ex:8.3f} s  peak {m_ex * mb:7.0f} MB"
        f"   sklearn/exact = {t_sk / t_ex:5.2f}x"
    )
    binned, t_bi, m_bi = timed(evaluate_arrays, gt, s, mode="binned", nll=False)
    print(
        f"binned  (10^4 bins):                 {t_bi:8.3f} s  peak {m_bi * mb:7.0f} MB"
        f"   sklearn/binned = {t_sk / t_bi:5.1f}x   peak/input = {m_bi / input_bytes:.3f}"
    )
    print(f"  |AUC binned - AUC exact| = {abs(binned.roc_auc - exact.roc_auc):.2e}")
    for label, res in (("exact", exact), ("binned", binned)):
        cost = threshold_move_cost(res)
        print(
            f"move threshold ({label}, {res.thresholds.size} thresholds): {cost * 1e6:7.1f} us per lookup"
        )
    del exact

    if args.n_big:
        del gt, s
        gt, s = make_data(args.n_big, seed=2)
        big_bytes = gt.nbytes + s.nbytes
        res, t_big, m_big = timed(binned_streaming, gt, s)
        sk_est = t_sk * args.n_big / args.n
        print(
            f"\nn = {args.n_big:.0e} ({big_bytes * mb:.0f} MB input), binned streaming in cubes of 10^7:"
            f" {t_big:8.3f} s  peak {m_big * mb:6.1f} MB  peak/input = {m_big / big_bytes:.4f}"
        )
        print(
            f"  sklearn not run at this size; linear extrapolation of its 10^7 time "
            f"({sk_est:.0f} s, a lower bound: sorting is n log n) / binned = {sk_est / t_big:5.1f}x"
        )
        print(f"  binned throughput: {args.n_big / t_big / 1e6:.0f} M scores/s")


if __name__ == "__main__":
    main()
