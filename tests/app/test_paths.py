"""The one resolver for paths built from client values (app/paths.py)."""

from __future__ import annotations

import os

import pytest

from app import paths, series


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("/tmp/x/secret", "separator"),
        ("../../../x/secret", "separator"),
        ("..", "starts with a dot"),
        (".", "starts with a dot"),
        (".hidden", "starts with a dot"),
        ("a\\b", "separator"),
        ("a\x00b", "NUL"),
        ("", "empty"),
        ("x" * 256, "longer than 255 bytes"),
        ("é" * 128, "longer than 255 bytes"),
        (None, "expected text, got NoneType"),
        (["FINAL"], "expected text, got list"),
        (3, "expected text, got int"),
    ],
)
def test_refused_names_say_why(value, why):
    with pytest.raises(paths.ClientPathError, match=why):
        paths.check_name("result", value)


@pytest.mark.parametrize("value", ["FINAL", "step-100", "a b", "x" * 255, "é" * 127, "-rf"])
def test_plain_names_pass(value):
    assert paths.check_name("result", value) == value


def test_run_file_stays_in_its_folder(tmp_path):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    assert paths.run_file(run, "eval", "result", "FINAL", ".h5") == run / "eval" / "FINAL.h5"
    # the suffix counts towards the 255-byte limit of one file name
    with pytest.raises(paths.ClientPathError, match="longer than 255"):
        paths.run_file(run, "eval", "result", "x" * 253, ".h5")
    outside = tmp_path / "secret_valid_prob.h5"
    outside.write_bytes(b"secret")
    os.symlink(outside, run / "eval" / "link_valid_prob.h5")
    with pytest.raises(paths.ClientPathError, match="leads out of"):
        paths.run_file(run, "eval", "result", "link", "_valid_prob.h5")


def test_run_dir_refuses_symlinks_out_and_missing_runs(tmp_path):
    root = tmp_path / "runs"
    (root / "good").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "escape")
    assert paths.run_dir(root, "good") == root / "good"
    for name in ("escape", "missing", "../runs/good", "/etc", ""):
        with pytest.raises(paths.ClientPathError):
            paths.run_dir(root, name)
        assert series.run_dir_for(root, name) is None
    assert series.run_dir_for(root, "good") == root / "good"
