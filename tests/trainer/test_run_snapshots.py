"""Snapshot, history and config-copy names (trainer/runs/snapshots.py, trainer.runs)."""

from __future__ import annotations

import os

from trainer import runs


def test_snapshot_paths_and_names_in_the_order_the_evaluation_page_offers(tmp_path):
    assert runs.snapshot_path(tmp_path, runs.LAST) == tmp_path / "snapshots" / "LAST.pt"
    assert runs.snapshot_path(tmp_path, 1200).name == "step-00001200.pt"
    assert runs.snapshot_names(tmp_path) == [] and runs.latest_snapshot(tmp_path) is None
    for i, which in enumerate([1000, runs.LAST, 2000, runs.FINAL]):
        path = runs.snapshot_path(tmp_path, which)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
        os.utime(path, ns=(i * 10**9, i * 10**9))
    (tmp_path / "snapshots" / ".LAST.pt.tmp").write_bytes(b"")  # an unfinished write
    assert runs.snapshot_names(tmp_path) == ["FINAL", "LAST", "step-00002000", "step-00001000"]
    assert runs.latest_snapshot(tmp_path) == runs.snapshot_path(tmp_path, runs.FINAL)


def test_history_and_config_copy_names(tmp_path):
    assert runs.history_dir(tmp_path) == tmp_path / "history"
    assert runs.history_plot_prefix(tmp_path) == tmp_path / "0-history"
    copy = runs.config_copy_path(tmp_path, "/somewhere/exp.py")
    assert copy == tmp_path / "0-exp.py"
    copy.write_text("n_steps = 1\n")
    assert runs.config_copy(tmp_path) == copy  # the reader finds what the writer names


def test_best_is_listed_after_last_kept_as_a_link_and_never_resumed_from(tmp_path):
    snaps = tmp_path / runs.SNAPSHOT_DIR
    snaps.mkdir()
    for name in ("step-00000010", "LAST", "FINAL"):
        (snaps / f"{name}.pt").write_bytes(name.encode())
    runs.keep_snapshot_as(tmp_path, runs.LAST, runs.BEST)
    assert runs.snapshot_names(tmp_path) == ["FINAL", "LAST", "BEST", "step-00000010"]
    best = runs.snapshot_path(tmp_path, runs.BEST)
    assert best.read_bytes() == b"LAST"
    assert os.stat(best).st_ino == os.stat(snaps / "LAST.pt").st_ino  # no second copy
    # LAST is replaced later (a new file): BEST keeps what LAST was
    runs.atomic_write_bytes(snaps / "LAST.pt", b"LAST, later")
    os.utime(best, (2e9, 2e9))  # even the newest file
    assert best.read_bytes() == b"LAST"
    assert runs.latest_snapshot(tmp_path).name != "BEST.pt"
    assert not list(snaps.glob("*.tmp"))
