"""docs/screenshots.py, for real: README's pictures can always be regenerated.

The script trains the demo for a few steps, evaluates it, runs a grid sweep of tiny trials
(two with ``--quick``), serves the dashboard and photographs five pages in headless Chromium (four without the sweep:
the terminated run checks the plan ``--no-sweep`` announces, so the script runs to its end once
per test session, in tests/conftest.py's ``demo_screens``, whose kept runs the accessibility
tests serve);
the PNGs must be real pictures of the asked size, and the script must leave no scratch folder or
process behind, also when it is terminated.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "docs" / "screenshots.py"
ALL_PAGES = ("experiments", "run", "preview", "evaluation", "sweep")


@pytest.fixture
def tmp() -> Iterator[Path]:
    """A short folder for TMPDIR: Chromium's socket paths under it must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="vbshots-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start(tmp: Path, *args: str) -> subprocess.Popen:
    """The script with ``tmp`` as its TMPDIR, so a test sees its scratch folder."""
    env = dict(os.environ, TMPDIR=str(tmp))
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def scratch_folders(tmp: Path) -> list[Path]:
    """The script's scratch folders left in ``tmp`` (torch keeps caches of its own there)."""
    return list(tmp.glob("voxelboard-screenshots-*"))


def processes_under(folder: Path) -> list[str]:
    """Command lines of the processes that name ``folder`` (the script's server, trainer)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if str(folder) in line:
            found.append(line)
    return found


def check_picture(path: Path, size: tuple[int, int]) -> None:
    """A PNG of ``size`` in at most 256 colours showing a page, not a blank frame."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == size, (path.name, image.size)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    # a page with its controls, text and drawn graphs, not a blank or one-colour frame
    assert colours is not None and 40 < len(colours) <= 256, (path.name, colours and len(colours))


@pytest.mark.browser
@pytest.mark.slow
def test_script_writes_a_picture_of_each_page_and_cleans_up(demo_screens):
    """The session's one full run of the script (tests/conftest.py's ``demo_screens``,
    ``--quick``, 2 training steps, 1 per trial, ``--keep`` and ``--data-dir`` so the
    accessibility tests can serve what it made)."""
    output = demo_screens.output
    assert demo_screens.returncode == 0, output[-3000:]
    out = demo_screens.images
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{p}.png" for p in ALL_PAGES)
    for page in ALL_PAGES:
        check_picture(out / f"{page}.png", (900, 640))
    assert "5 screenshots" in output
    assert "5 pages to photograph: experiments, run, preview, evaluation, sweep" in output
    assert "running the sweep ..." in output
    # the sweep's trials ended with it: none left training; no scratch folder with --keep
    assert demo_screens.left_scratch == []
    assert demo_screens.left_processes == []
    # what --keep kept: the run, evaluated, and the sweep's two trials (--quick) beside it
    runs = demo_screens.work / "runs"
    assert (runs / "demo_cnn3d" / "status.json").is_file()
    assert sorted(p.name for p in runs.glob("demo_cnn3d_lr-sweep-1-*")) == [
        f"demo_cnn3d_lr-sweep-1-00{i}" for i in range(2)
    ]
    assert not (demo_screens.work / "data").exists()  # --data-dir: no copy of the demo data


def test_keep_refuses_a_folder_that_exists(tmp, tmp_path):
    proc = start(tmp, "--keep", str(tmp_path), "--out", str(tmp_path / "images"))
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert f"--keep {tmp_path}: the folder exists; name a new one" in output
    assert scratch_folders(tmp) == [] and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_terminated_script_stops_its_processes_and_removes_its_scratch_folder(
    tmp, tmp_path, demo_data_dir
):
    """Also ``--no-sweep``: the plan the script announces (and then photographs) leaves out the
    sweep page, and no sweep is run; one script run holds both promises (``--quick``: no
    batch workers to start)."""
    proc = start(tmp, "--out", str(tmp_path / "images"), "--steps", "100000", "--no-sweep",
                 "--quick", "--data-dir", str(demo_data_dir))  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        # terminated while it trains: the run directory exists once training has started
        while not list(tmp.glob("*/runs/*/status.json")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, output
    assert "4 pages to photograph: experiments, run, preview, evaluation\n" in output, output
    assert "training the demo config ..." in output and "running the sweep" not in output
    assert scratch_folders(tmp) == [], output
    assert processes_under(tmp) == []


@pytest.mark.parametrize(
    "args, message",
    [(["--steps", "0"], "expected a positive whole number, got '0'"),
     (["--width", "wide"], "invalid positive value: 'wide'"),
     (["--sweep-steps", "-1"], "expected a positive whole number, got '-1'")],
)  # fmt: skip
def test_bad_arguments_are_refused_with_the_value(tmp, args, message):
    proc = start(tmp, *args)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert message in output
