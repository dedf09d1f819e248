"""What every page shares: ids of the shell's components, the class palette, empty states, panels, and
:func:`guarded`, the one error handler every callback goes through.

Selection state of the Neurons page lives in ``dcc.Store`` components and holds ids only (see
:mod:`advlens.app.neurons`); every id coming back from the browser is checked again on the server
(:mod:`advlens.app.validate`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

from dash import html
from dash.exceptions import PreventUpdate
from plotly.colors import qualitative

from advlens.app.figures import figure
from advlens.app.images import hex_rgb
from advlens.errors import AdvlensError

logger = logging.getLogger(__name__)

URL = "url"
"""The shell's ``dcc.Location``: the page (pathname) and its selection (search)."""
URL_WRITTEN = "url-written"
"""The last query string a page wrote into the URL (so the router can tell it from a back/forward step)."""
PAGE_CONTENT = "page-content"
NAV = "nav"

PALETTE: tuple[str, ...] = tuple(qualitative.D3) + tuple(qualitative.Dark24)
"""Class colours indexed by class id (D3/Tab10 first, as in the paper's figures), the same in every view."""

SELECTED_COLOR = "#d62728"
"""The selected neuron (red, as in the paper's Neuron Cluster View)."""

GROUP_COLOR = "#1f4e9c"
"""Selected dendrogram subtrees."""

ERROR_COLOR = "#a1001a"

LOADING_DELAY_MS = 300
"""Computations shorter than this show no busy indicator."""

MAX_FULL_CLASSES = 12
"""Datasets with more classes open on a class subset (paper 001, §6.2.2)."""

GRAPH_CONFIG = {"displaylogo": False, "showSendToCloud": False, "showEditInChartStudio": False,
                "modeBarButtonsToRemove": ["sendChartToCloud", "sendDataToCloud", "autoScale2d"], "scrollZoom": False}
"""No button uploads data anywhere (plotly's "Share chart" sends the figure to a cloud service)."""


def class_color(label: int) -> str:
    return PALETTE[int(label) % len(PALETTE)]


def rgba(color: str, alpha: float) -> str:
    """``#rrggbb`` as an ``rgba()`` string."""
    r, g, b = hex_rgb(color)
    return f"rgba({r},{g},{b},{alpha})"


def empty_figure(text: str, height: int | None = None, error: bool = False) -> dict:
    """A blank figure carrying one centred message (an empty state or an error, never an empty box)."""
    layout = {
        "xaxis": {"visible": False}, "yaxis": {"visible": False}, "plot_bgcolor": "white", "paper_bgcolor": "white",
        "margin": {"l": 10, "r": 10, "t": 10, "b": 10},
        "annotations": [{"text": _wrap(text) if error else text, "showarrow": False, "xref": "paper",
                         "yref": "paper", "x": 0.5, "y": 0.5,
                         "font": {"size": 13, "color": ERROR_COLOR if error else "#666"}}],
    }
    if height is not None:
        layout["height"] = height
    return figure([], layout)


def error_figure(text: str) -> dict:
    """A figure that says what went wrong instead of drawing stale data."""
    return empty_figure(text, error=True)


def _wrap(text: str, width: int = 90) -> str:
    """Break a long message into lines for a figure annotation (Plotly does not wrap text)."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "<br>".join(lines)


def message(text: str | Sequence, kind: str = "hint") -> html.Div:
    """An empty-state or error message block (``kind``: hint, warning, error)."""
    return html.Div(text, className=f"message message-{kind}")


def panel(title: str, body: list, controls: list | None = None, class_name: str = "") -> html.Section:
    """A titled view panel."""
    header = html.Div([html.H2(title), html.Div(controls or [], className="panel-controls")],
                      className="panel-header")
    return html.Section([header, *body], className=f"panel {class_name}".strip())


def pager(prev_id: str, label_id: str, next_id: str) -> list:
    """Previous-page and next-page buttons around a page label (Image Grid, channel gallery)."""
    return [
        html.Button("‹", id=prev_id, n_clicks=0, className="button pager-button", title="previous page"),
        html.Span(id=label_id, className="pager"),
        html.Button("›", id=next_id, n_clicks=0, className="button pager-button", title="next page"),
    ]


def fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"


def error_text(exc: Exception) -> str:
    """What a view says about an exception: an advlens error's own message (it names the problem and what
    to do), anything else as an unexpected error whose traceback went to the server log."""
    if isinstance(exc, AdvlensError):
        return str(exc)
    return (f"Unexpected error ({type(exc).__name__}: {exc}). The traceback is in the server's log; please report "
            "it.")


def guarded(on_error: Callable[[str], Any]) -> Callable[[Callable], Callable]:
    """Decorate a callback so that a failure shows in its view instead of a traceback or a stale view.

    ``on_error(text)`` returns the callback's outputs showing ``text`` (a message figure, a message block,
    ``no_update`` for state stores…). :class:`AdvlensError` (a bad id from the browser, a damaged store,
    a model that cannot be loaded) shows its message; any other exception is logged with its traceback
    and shown as an unexpected error. :class:`PreventUpdate` passes through.
    """
    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            try:
                return func(*args, **kwargs)
            except PreventUpdate:
                raise
            except AdvlensError as exc:
                logger.info("%s: %s", func.__qualname__, exc)
                return on_error(error_text(exc))
            except Exception as exc:  # noqa: BLE001 - shown in the view and logged with its traceback
                logger.exception("callback %s failed", func.__qualname__)
                return on_error(error_text(exc))
        wrapper.on_error = on_error
        return wrapper
    return decorate
