"""Image figures: arrays drawn as PNG pictures, the preview viewer's figure among them.

A minimal PNG writer (``png_data_uri``) turns uint8 pixels into the ``source`` of a
``go.Image`` trace, so planes are rendered on the server without an imaging library; the
evaluation page's segmentation view (``app.evaluation_figures``) and neuron colouring
(``app.neuron_figures``) draw with it too. ``preview_figure`` draws one plane of a training
preview: raw data with a class probability overlaid, or both side by side. Pure: arrays in,
``go.Figure`` out.
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Sequence

import numpy as np
import plotly.colors as pcolors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.figures import CLASS_COLOURS, new_figure


def png_data_uri(image: np.ndarray) -> str:
    """Encode a uint8 grey ``(h, w)`` or RGB ``(h, w, 3)`` array as a PNG ``data:`` URI.

    A minimal PNG writer (zlib, no per-row filter) so the viewer needs no imaging library.
    """
    img = np.ascontiguousarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"png_data_uri needs uint8 pixels, got {img.dtype}")
    if img.ndim == 2:
        colour_type, channels = 0, 1
    elif img.ndim == 3 and img.shape[2] == 3:
        colour_type, channels = 2, 3
    else:
        raise ValueError(f"png_data_uri needs a (h, w) or (h, w, 3) array, got shape {img.shape}")
    h, w = img.shape[:2]
    rows = np.empty((h, 1 + w * channels), dtype=np.uint8)
    rows[:, 0] = 0  # filter type "none" on every row
    rows[:, 1:] = img.reshape(h, w * channels)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 4))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _to_uint8(a: np.ndarray) -> np.ndarray:
    return (np.clip(np.nan_to_num(a, nan=0.0), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def _viridis_lut() -> np.ndarray:
    colours = pcolors.sample_colorscale("Viridis", [i / 255 for i in range(256)])
    return (
        np.array([pcolors.unlabel_rgb(c) for c in colours], dtype=np.float64)
        .round()
        .astype(np.uint8)
    )


def overlay_rgb(
    raw_slice: np.ndarray,
    prob_slice: np.ndarray,
    opacity: float,
    colour: Sequence[int] = CLASS_COLOURS[1],
) -> np.ndarray:
    """Grey raw image with the class probability blended in as a coloured overlay.

    Each pixel is ``raw * (1 - a) + colour * a`` with ``a = opacity * probability``, so
    an uncertain prediction stays faint and a zero opacity shows the raw data only.

    Returns:
        uint8 RGB array ``(h, w, 3)``.
    """
    raw = np.clip(np.nan_to_num(np.asarray(raw_slice, dtype=np.float32)), 0.0, 1.0)
    prob = np.clip(np.nan_to_num(np.asarray(prob_slice, dtype=np.float32)), 0.0, 1.0)
    alpha = (float(np.clip(opacity, 0.0, 1.0)) * prob)[..., None]
    col = np.asarray(colour, dtype=np.float32) / 255.0
    rgb = raw[..., None] * (1.0 - alpha) + col * alpha
    return _to_uint8(rgb)


def preview_figure(
    raw_slice: np.ndarray,
    prob_slice: np.ndarray,
    opacity: float = 0.5,
    mode: str = "overlay",
    *,
    colour: Sequence[int] = CLASS_COLOURS[1],
    title: str = "",
    uirevision: str = "preview",
) -> go.Figure:
    """One z plane of a preview cube as an image figure (PNG data rendered server-side).

    Args:
        raw_slice: raw data ``(y, x)`` in [0, 1].
        prob_slice: one class probability ``(y, x)`` in [0, 1], same shape as ``raw_slice``.
        opacity: overlay strength in [0, 1] (``'overlay'`` mode).
        mode: ``'overlay'`` (raw grey, probability as coloured overlay) or ``'side'``
            (raw and probability side by side, the probability in a viridis colour map).
        colour: RGB overlay colour of the class.
        title: figure title.
        uirevision: keeps zoom and pan while moving through z.

    Returns:
        A figure of ``go.Image`` traces whose ``source`` is a PNG data URI.
    """
    raw = np.asarray(raw_slice)
    prob = np.asarray(prob_slice)
    if raw.ndim != 2 or raw.shape != prob.shape:
        raise ValueError(
            f"preview raw and probability slices must be 2-d and equal in shape, got {raw.shape} and {prob.shape}"
        )
    layout = {
        "title": {"text": title, "x": 0.01, "font": {"size": 14}},
        "margin": {"l": 10, "r": 10, "t": 50 if title or mode == "side" else 10, "b": 10},
        "height": 560,
        "uirevision": uirevision,
    }
    bare = {"showticklabels": False, "showgrid": False, "zeroline": False}
    if mode == "overlay":
        # one constructor call: a layout set afterwards cost most of the figure's time
        image = go.Image(
            source=png_data_uri(overlay_rgb(raw, prob, opacity, colour)), name="overlay"
        )
        return new_figure([image], **layout, xaxis=bare, yaxis=bare)
    if mode == "side":
        fig = make_subplots(
            rows=1,
            cols=2,
            shared_yaxes=True,
            subplot_titles=("raw", "probability"),
            figure=new_figure(),
        )
        fig.add_trace(go.Image(source=png_data_uri(_to_uint8(raw)), name="raw"), row=1, col=1)
        prob_rgb = _viridis_lut()[_to_uint8(prob)]
        fig.add_trace(go.Image(source=png_data_uri(prob_rgb), name="probability"), row=1, col=2)
    else:
        raise ValueError(f"unknown preview mode {mode!r}; expected 'overlay' or 'side'")
    fig.update_layout(**layout)
    # image traces keep square pixels on their own; matching x lets both panels pan together
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, matches="x")
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)
    return fig
