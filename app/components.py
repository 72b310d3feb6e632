"""Pieces shared by the pages: navigation bar, panels, state colours and number formats.

Pure functions returning Dash components or strings; no callbacks live here (callbacks
belong to the page that owns their ids).
"""

from __future__ import annotations

import math
import time
from typing import Any
from urllib.parse import quote, unquote

from dash import dcc, html

#: badge colour per run state (text on white background)
STATE_COLORS = {
    "queued": "#6c757d",
    "running": "#198754",
    "finished": "#0d6efd",
    "stopped": "#495057",
    "stopping": "#495057",  # a sweep whose trials are being stopped
    "pruned": "#856404",
    "truncated": "#0b7285",  # finished before its n_steps (max_runtime): ranked apart
    "failed": "#dc3545",
    "diverged": "#6f42c1",
    "lost": "#fd7e14",
    "unknown": "#adb5bd",
}


#: ids of the app-wide banner that says why a callback failed (``assets/errors.js`` fills it
#: for refused or failed requests, ``app._show_callback_error`` for exceptions in callbacks)
ERROR_BANNER = "vb-callback-error"
ERROR_TEXT = "vb-callback-error-text"
ERROR_CLOSE = "vb-callback-error-close"


def callback_error_banner() -> html.Div:
    """The hidden banner that shows why an action failed, with a close button."""
    return html.Div(
        [
            html.Span(id=ERROR_TEXT),
            html.Button("×", id=ERROR_CLOSE, n_clicks=0, title="dismiss", className="vb-close"),
        ],
        id=ERROR_BANNER,
        hidden=True,
        role="alert",
        className="vb-callback-error",
    )


def navbar(read_only: bool = False) -> html.Nav:
    """The top bar: product name, links to the experiments and jobs pages, read-only marker."""
    items: list[Any] = [
        dcc.Link("VoxelBoard", href="/", className="vb-brand"),
        dcc.Link("Experiments", href="/", className="vb-navlink"),
        dcc.Link("Jobs", href="/jobs", className="vb-navlink", id="vb-nav-jobs"),
    ]
    if read_only:
        items.append(html.Span("read-only", className="vb-pill", id="vb-read-only"))
    return html.Nav(items, className="vb-navbar")


def panel(title: str, *children: Any, className: str = "", **kwargs: Any) -> html.Section:
    """A titled box."""
    return html.Section(
        [html.H2(title, className="vb-panel-title"), *children],
        className=f"vb-panel {className}".strip(),
        **kwargs,
    )


def state_badge(state: str) -> html.Span:
    """A coloured label for a run state."""
    color = STATE_COLORS.get(state, STATE_COLORS["unknown"])
    return html.Span(state, className="vb-badge", style={"backgroundColor": color})


def fmt_duration(seconds: float | None) -> str:
    """``'1d 02h'``, ``'3h 04m'``, ``'5m 06s'``, ``'7s'``; ``''`` for ``None``."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return ""
    s = int(round(seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d {h:02d}h"
    if h:
        return f"{h}h {m:02d}m"
    if m:
        return f"{m}m {s:02d}s"
    return f"{s}s"


def fmt_time(timestamp: float | None) -> str:
    """Local ``YYYY-MM-DD HH:MM`` for a unix time; ``''`` for ``None``."""
    if not timestamp:
        return ""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def fmt_bytes(n: float) -> str:
    """``'1.5 GiB'`` style sizes."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def round_sig(x: float | None, digits: int = 4) -> float | None:
    """``x`` to ``digits`` significant digits (``None`` stays ``None``)."""
    if x is None or not math.isfinite(x) or x == 0:
        return x
    return round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))


def meter(label: str, fraction: float, text: str) -> html.Div:
    """A labelled horizontal bar (0..1) for the system panel."""
    pct = max(0.0, min(1.0, fraction)) * 100
    return html.Div(
        [
            html.Span(label, className="vb-meter-label"),
            html.Div(
                html.Div(className="vb-meter-fill", style={"width": f"{pct:.0f}%"}),
                className="vb-meter-track",
            ),
            html.Span(text, className="vb-meter-text"),
        ],
        className="vb-meter",
    )


def run_href(name: str, page: str = "") -> str:
    """The address of run ``name``'s page (``page``: ``""``, ``"/preview"`` or ``"/evaluation"``),
    the name percent-encoded: run folders may be named with spaces, ``#``, ``%`` or any letter."""
    return f"/run/{quote(name, safe='')}{page}"


def sweep_href(sweep_id: str) -> str:
    """The address of sweep ``sweep_id``'s page, the id percent-encoded."""
    return f"/sweep/{quote(sweep_id, safe='')}"


def url_part(value: Any) -> Any:
    """A name as a page's address carried it (``<name>`` of a path template), decoded: the
    browser sends the path percent-encoded, and so does every link ``run_href`` makes."""
    return unquote(value) if isinstance(value, str) else value


def run_not_found(name: Any, component_id: str) -> html.Div:
    """The page body for a URL naming a run that is not in the runs directory."""
    shown = name if isinstance(name, str) else ""
    return html.Div(
        [
            html.H1("Run not found", className="vb-page-title"),
            html.P(f"There is no run named {shown[:120]!r} in the runs directory."),
            dcc.Link("Back to the experiments", href="/"),
        ],
        id=component_id,
        style={"padding": "20px"},
    )


def empty_state(
    text: str,
    component_id: str,
    action: Any = None,
    hidden: bool = False,
    replaces_rest: bool = False,
) -> html.Div:
    """What a page shows instead of empty frames: one short sentence and the one action that
    helps (a button or link), hidden once there is something to show.

    With ``replaces_rest`` every later sibling (the frames it stands for) is hidden while the
    sentence shows (``assets/voxelboard.css``), so one ``hidden`` output switches both.
    """
    children = [html.Span(text, className="vb-empty-text")]
    if action is not None:
        children.append(action)
    css = "vb-empty vb-replaces-rest" if replaces_rest else "vb-empty"
    return html.Div(children, id=component_id, className=css, hidden=hidden)


#: style of a row of controls or links that wraps on narrow screens
ROW = {"display": "flex", "flexWrap": "wrap", "gap": "12px", "alignItems": "center"}


def _label_for(control: Any) -> dict[str, str]:
    """``htmlFor`` naming ``control`` when it has a string id: a browser then names an input by
    its label, and ``assets/a11y.js`` names the sliders, option lists and dropdowns."""
    control_id = getattr(control, "id", None)
    return {"htmlFor": control_id} if isinstance(control_id, str) else {}


def labelled(label: str, control: Any, width: str = "auto") -> html.Div:
    """``control`` with ``label`` above it (spaced off it), ``width`` wide (a CSS width); the
    label names the control for screen readers too."""
    return html.Div(
        [html.Label(label, className="vb-control-label", **_label_for(control)), control],
        className="vb-control",
        style={"width": width},
    )


def screen_reader_label(label: str, control_id: str) -> html.Label:
    """A label only screen readers see, for a control whose purpose the page shows otherwise
    (a slider beside its labelled number box)."""
    return html.Label(label, htmlFor=control_id, className="vb-sr-only")


def controls(*children: Any, **kwargs: Any) -> html.Div:
    """One row of controls, the same grid on every page: wraps on narrow screens, labels on
    top, buttons aligned to the controls' bottom edge."""
    return html.Div(list(children), className="vb-controls", **kwargs)


def text_input(id_: str, placeholder: str) -> dcc.Input:
    """A one-line text box in the dashboard's style, showing ``placeholder`` while empty."""
    return dcc.Input(id=id_, type="text", placeholder=placeholder, className="vb-input")


def button(label: str, *, kind: str = "", **kwargs: Any) -> html.Button:
    """A button in the dashboard's style; ``kind`` ``'primary'`` or ``'danger'`` colours it."""
    css = f"vb-button vb-{kind}" if kind else "vb-button"
    return html.Button(label, className=css, **{"n_clicks": 0, **kwargs})


def graph(
    graph_id: str, height: int = 320, config: dict[str, Any] | None = None, figure: Any = None
) -> dcc.Graph:
    """A graph ``height`` pixels high (no Plotly logo by default), showing ``figure`` or empty
    until a callback fills it; a layout that already has the figure draws it with the page."""
    return dcc.Graph(
        id=graph_id,
        figure={"data": [], "layout": {"height": height}} if figure is None else figure,
        config={"displaylogo": False} if config is None else config,
    )


def neuroglancer_link(prefix: str) -> html.Div:
    """The "Open in neuroglancer" button of a page (ids ``<prefix>-ng-open``, ``-ng-link``,
    ``-ng-msg``): the link to the viewer appears under it once the viewer is made."""
    return controls(
        button("Open in neuroglancer", id=f"{prefix}-ng-open"),
        html.A(id=f"{prefix}-ng-link", target="_blank", rel="noopener", hidden=True),
        html.Div(id=f"{prefix}-ng-msg", className="vb-error"),
    )
