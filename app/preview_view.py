"""What the preview page shows: a run's preview files, their choices and one plane's figure.

The preview page (``app/pages/preview.py``) lists ``previews/preview-<step>.h5`` files and
draws one plane of one cube of one file. Here the files are listed and read through
``trainer.runs`` (``preview_files``, ``read_preview_meta``, ``read_preview_block``, whose
decoded cubes are cached by file and mtime), the controls' choices are made from what a file
holds, and the figure is built (``app.image_figures.preview_figure``). A missing or corrupt
file gives a message naming it, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from dash import no_update

from app import inputs, paths
from app.figures import CLASS_COLOURS
from app.image_figures import preview_figure
from trainer import runs
from trainer.runs import PreviewError, read_preview_block, read_preview_meta

__all__ = [
    "file_choices",
    "file_marks",
    "file_positions",
    "file_slider",
    "file_steps",
    "pick",
    "preview_files",
    "preview_label",
    "render",
    "render_preview",
    "waiting_text",
    "z_choices",
]


def preview_files(run_dir: Path) -> list[Path]:
    """The run's preview files, oldest step first; none from a folder that is a link out of
    the runs folder (``waiting_text`` says why)."""
    try:
        return runs.preview_files(run_dir)
    except paths.OutsideRunsError:
        return []


def preview_label(path: Path) -> str:
    """``"step 1,000 · 0.25 h"`` of a preview file, or its name marked unreadable."""
    try:
        meta = read_preview_meta(path)
        return f"step {meta.step:,} · {meta.hours:.2f} h"
    except PreviewError:
        return f"{path.name} (unreadable)"


def file_steps(files: list[Path]) -> list[int]:
    """The training step of each preview file (its position for a file whose name has none)."""
    steps = [runs.preview_step(f) for f in files]
    return [i if s is None else s for i, s in enumerate(steps)]


def file_positions(files: list[Path]) -> list[int]:
    """The file slider's value of each file: its training step when the steps are evenly
    spaced (the slider then steps by their spacing and its number box shows the step), else
    its position in the list (the slider's keys then reach every file; see ``file_slider``)."""
    steps = file_steps(files)
    return steps if _even_step(steps) is not None else list(range(len(files)))


def file_marks(files: list[Path]) -> dict:
    """Marks of the file slider: about six positions labelled with their training step."""
    if not files:
        return {}
    steps, positions = file_steps(files), file_positions(files)
    every = max(1, len(files) // 6)
    keep = set(range(0, len(files), every)) | {len(files) - 1}
    return {positions[i]: f"{steps[i]:,}" for i in sorted(keep)}


def _even_step(steps: list[int]) -> int | None:
    """The spacing of evenly spaced increasing ``steps`` (1 for a single one), else ``None``."""
    gaps = {b - a for a, b in zip(steps, steps[1:], strict=False)}
    if not gaps:
        return 1
    gap = gaps.pop()
    return gap if not gaps and gap > 0 else None


def file_slider(files: list[Path]) -> dict[str, Any]:
    """The file slider's ``min``, ``max``, ``step``, ``marks`` and ``allow_direct_input``.

    Evenly spaced previews (``preview_every``): the value is the training step, so the number
    box beside the slider shows and takes the step. Unevenly spaced ones (``prev_save_h``):
    the value is the file's position and the box is hidden, as a box showing a position
    reads as a step; the label under the slider names the step.
    """
    positions = file_positions(files) or [0]
    even = _even_step(file_steps(files)) is not None
    return {
        "min": positions[0],
        "max": positions[-1],
        "step": _even_step(positions) or 1,
        "marks": file_marks(files),
        "allow_direct_input": even,
    }


def waiting_text(run_dir: Path) -> str:
    """When a run's first preview comes, from its resolved config's preview settings."""
    try:
        paths.confined(run_dir / runs.PREVIEW_DIR)
    except paths.OutsideRunsError as e:
        return f"No previews shown: {e}"
    config = runs.read_resolved_config(run_dir)
    if config is None:
        return "No preview yet: the trainer writes them while it trains."
    if "preview_data_path" in config and config["preview_data_path"] is None:
        return "This run makes no previews: its config sets no preview_data_path."
    every = config.get("preview_every")
    if isinstance(every, int) and every > 0:
        return f"No preview yet: the trainer writes one every {every:,} steps."
    first, then = config.get("initial_prev_h"), config.get("prev_save_h")
    if isinstance(first, int | float) and isinstance(then, int | float):
        return (
            f"No preview yet: the first comes after {first:g} h of training, "
            f"then one every {then:g} h."
        )
    return "No preview yet: the trainer writes them while it trains."


def pick(files: list[Path], value: Any) -> Path:
    """The file nearest to the file slider's ``value`` (``file_positions``; the newest for
    anything not a number)."""
    value = inputs.integer(value)
    if value is None:
        return files[-1]
    positions = file_positions(files)
    return files[min(range(len(files)), key=lambda i: (abs(positions[i] - value), -i))]


def file_choices(files: list[Path], index: Any, block: Any, cls: Any) -> tuple:
    """(cube options, cube, class options, class, label) of the preview at ``index``; the
    cube and class chosen stay when that preview has them."""
    if not files:
        return [], None, [], None, "no previews yet: the trainer writes one every preview interval"
    path = pick(files, index)
    try:
        meta = read_preview_meta(path)
    except PreviewError:  # the message under the controls says why (_render)
        return [], None, [], None, preview_label(path)
    blocks = list(meta.blocks)
    classes = [{"label": f"class {c}", "value": c} for c in range(meta.n_classes)]
    block = inputs.choice(block, meta.blocks, blocks[0])
    cls = inputs.integer(cls)
    cls = cls if cls is not None and 0 <= cls < meta.n_classes else min(1, meta.n_classes - 1)
    return blocks, block, classes, cls, preview_label(path)


def z_choices(files: list[Path], index: Any, block: Any, z: Any) -> tuple | None:
    """(first plane, last plane, plane, marks) of the z slider for ``block`` of the preview
    at ``index``, in the data's own z (``z0`` + the plane in the cube), so the slider and
    its number box show the z the figure's title names; the plane kept when the cube has it,
    else the middle one. ``None``: nothing to change."""
    if not files or inputs.text(block) is None:
        return None
    path = pick(files, index)
    try:
        meta = read_preview_meta(path)
    except PreviewError:
        return 0, 0, 0, {}
    if block not in meta.blocks:
        return None
    nz = meta.blocks[block][0]
    z0 = meta.z0.get(block, 0)
    z = inputs.integer(z)
    z = z if z is not None and z0 <= z < z0 + nz else z0 + nz // 2
    marks = {z0 + i: str(z0 + i) for i in sorted({0, nz // 2, nz - 1})}
    return z0, z0 + nz - 1, z, marks


def render_preview(
    path: Path, block: str, z: int, cls: int, opacity: float, mode: str
) -> go.Figure:
    """The figure of one plane of one cube of one preview file (cached decode)."""
    meta = read_preview_meta(path)
    if block not in meta.blocks:
        raise PreviewError(f"preview file {path} has no {block!r}; it has {', '.join(meta.blocks)}")
    raw, prob = read_preview_block(path, block)
    z = min(max(int(z), 0), raw.shape[0] - 1)
    cls = min(max(int(cls), 0), prob.shape[0] - 1)
    colour = CLASS_COLOURS[cls % len(CLASS_COLOURS)]
    title = f"step {meta.step:,} · {meta.hours:.2f} h · {block} · z {meta.z0.get(block, 0) + z} · class {cls}"
    return preview_figure(
        raw[z],
        prob[cls, z],
        opacity,
        mode,
        colour=colour,
        title=title,
        uirevision=f"{path.parent}|{block}",
    )


def render(
    files: list[Path], index: Any, block: Any, z: Any, cls: Any, opacity: Any, mode: Any
) -> tuple:
    """(figure or ``no_update``, message, whether the graph is hidden) of the preview at
    ``index`` as the controls say. An unreadable preview hides the graph (no empty frame) and
    its message names the file and the problem."""
    if not files:
        return no_update, "This run has no previews yet.", True
    path = pick(files, index)
    mode = inputs.choice(mode, ("overlay", "side"), "overlay")
    opacity = inputs.number(opacity, lo=0.0, hi=1.0)
    block, cls = inputs.text(block), inputs.integer(cls, lo=0)
    try:
        if block is None or cls is None:  # the cube and class choices are still on their way
            read_preview_meta(path)
            return no_update, "", no_update
        z0 = read_preview_meta(path).z0.get(block, 0)
        z = max((inputs.integer(z) or z0) - z0, 0)  # the slider holds the data's own z
        opacity = 0.5 if opacity is None else opacity
        return render_preview(path, block, z, cls, opacity, mode), "", False
    except PreviewError as e:
        return no_update, str(e), True
