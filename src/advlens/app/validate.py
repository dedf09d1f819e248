"""Server-side checks of every id and choice that comes from the browser (or the URL).

The browser sends the values of stores, dropdowns and clicks with every callback request, and anyone
can send a request by hand: nothing it holds is trusted. Each check returns the value in its plain
Python type or raises :class:`InvalidSelection` with a message that names the value, what is valid,
and so what to do; the views show that message (see :func:`advlens.app.common.guarded`). No value is
clamped or wrapped (neuron ``-1`` is an error, not the last neuron).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from numbers import Integral, Real

import numpy as np

from advlens import measures
from advlens.analysis import Session
from advlens.errors import AdvlensError
from advlens.models.graph import ModelGraph


class InvalidSelection(AdvlensError):
    """An id or choice sent by the browser (or written in the URL) is not one of the store's."""


MAX_LABEL = 200
"""Longest selection label accepted (the label is shown as text)."""


def integer(value, what: str) -> int:
    """An integer id (JSON integers only: no booleans, no fractions; digit strings from the URL)."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    if isinstance(value, Integral) and not isinstance(value, bool):
        return int(value)
    raise InvalidSelection(f"{what} {value!r} is not an id: ids are whole numbers")


def _in_range(value, count: int, what: str, scope: str) -> int:
    number = integer(value, what)
    if not 0 <= number < count:
        valid = f"0–{count - 1}" if count else "none"
        raise InvalidSelection(f"{what} {number} does not exist: {scope} has {what} ids {valid}")
    return number


def pair_id(session: Session, value) -> int | None:
    """A pair id of the store (``None`` passes: no pair selected)."""
    if value is None:
        return None
    return _in_range(value, session.num_pairs, "pair", f"this store ({session.num_pairs} successful attacks)")


def neuron_id(session: Session, value) -> int | None:
    """A neuron id (a channel of the analysed layer); ``None`` passes."""
    if value is None:
        return None
    layer = session.store.config.get("model", {}).get("analysed_layer", "?")
    return _in_range(value, session.num_neurons, "neuron", f"the analysed layer {layer}")


def class_id(session: Session, value, what: str = "class") -> int:
    return _in_range(value, session.num_classes, what, f"this dataset ({session.num_classes} classes)")


def node_ids(session: Session, values) -> list[int]:
    """Dendrogram node ids: leaves 0 … K−1 and merges K … 2K−2."""
    if values is None:
        return []
    if not isinstance(values, (list, tuple)):
        raise InvalidSelection(f"dendrogram nodes {values!r} are not a list of node ids")
    total = 2 * session.num_neurons - 1
    return [_in_range(v, total, "dendrogram node", f"the dendrogram of {session.num_neurons} neurons")
            for v in values]


def pair_ids(session: Session, values) -> list[int]:
    """A list of pair ids (a selection), checked at once."""
    if not isinstance(values, (list, tuple)):
        raise InvalidSelection(f"the selected pairs {str(values)[:60]!r} are not a list of pair ids")
    if any(isinstance(v, bool) or not isinstance(v, Integral) for v in values):
        bad = next(v for v in values if isinstance(v, bool) or not isinstance(v, Integral))
        raise InvalidSelection(f"selected pair {bad!r} is not an id: ids are whole numbers")
    ids = np.asarray(values, dtype=np.int64)
    outside = ids[(ids < 0) | (ids >= session.num_pairs)]
    if outside.size:
        raise InvalidSelection(f"selected pair {int(outside[0])} does not exist: this store has pair ids "
                             f"0–{session.num_pairs - 1}")
    return ids.tolist()


def choice(value, choices: Iterable, what: str):
    """One of a fixed set of choices (a sort order, a measure, a side…)."""
    options = list(choices)
    if isinstance(value, bool) or value not in options:
        raise InvalidSelection(f"{what} {value!r} is not one of {', '.join(repr(o) for o in options)}")
    return value


def number(value, what: str, low: float, high: float) -> float:
    """A finite number in [low, high] (a slider value)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or not low <= value <= high:
        raise InvalidSelection(f"{what} {value!r} must be a number from {low:g} to {high:g}")
    return float(value)


def page_number(value, pages: int | None = None) -> int:
    """A page index 0 … pages−1 of the Image Grid (shown to people as page 1 … pages)."""
    page = integer(0 if value is None else value, "page")
    if page < 0:
        raise InvalidSelection(f"page index {page} is negative: the first page is 0")
    if pages is not None and page >= pages:
        raise InvalidSelection(f"page {page + 1} does not exist: this selection has {pages} page"
                               f"{'s' if pages > 1 else ''}")
    return page


def rf_quantile(session: Session, value) -> float | None:
    """A stored quantile level for RF thresholds (``None``: the store's default)."""
    if value is None:
        return None
    levels = session.rf_quantile_levels
    if isinstance(value, Real) and not isinstance(value, bool):
        for level in levels:
            if math.isclose(float(value), level, rel_tol=0, abs_tol=1e-9):
                return level
    raise InvalidSelection(f"RF threshold quantile {value!r} is not stored: pick one of "
                         f"{', '.join(f'{q:g}' for q in levels)}")


def class_view(session: Session, classes) -> dict | None:
    """The classes the Data Overview shows, ``{"rows": [ids], "cols": [ids]}`` (``None``: the default)."""
    if classes is None:
        return None
    if not isinstance(classes, Mapping) or not {"rows", "cols"} <= set(classes):
        raise InvalidSelection(f"shown classes {str(classes)[:80]!r} are not {{'rows': [...], 'cols': [...]}}")
    out = {}
    for key, what in (("rows", "row class"), ("cols", "column class")):
        values = classes[key]
        if not isinstance(values, (list, tuple)):
            raise InvalidSelection(f"the {what}es {values!r} are not a list of class ids")
        out[key] = [class_id(session, v, what) for v in values]
    return out


def selection(session: Session, value) -> dict | None:
    """A selection of pairs, ``{"pairs": [ids], "label": text, "cell": [true, adversarial] or None}``."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or "pairs" not in value:
        raise InvalidSelection(f"selection {str(value)[:80]!r} is not {{'pairs': [...], 'label': ..., 'cell': ...}}")
    label = value.get("label", "")
    if not isinstance(label, str) or len(label) > MAX_LABEL:
        raise InvalidSelection(f"selection label {str(label)[:40]!r}… is not a short text")
    cell = value.get("cell")
    if cell is not None:
        if not isinstance(cell, (list, tuple)) or len(cell) != 2:
            raise InvalidSelection(f"selected cell {cell!r} is not [true class, adversarial class]")
        cell = [class_id(session, cell[0], "true class"), class_id(session, cell[1], "adversarial class")]
    return {"pairs": pair_ids(session, value["pairs"]), "label": label, "cell": cell}


def nodes_record(session: Session, record) -> dict | None:
    """The selected dendrogram nodes with the tree they refer to (pair, RF threshold, distance, linkage)."""
    if record is None:
        return None
    if not isinstance(record, Mapping):
        raise InvalidSelection(f"selected nodes {str(record)[:80]!r} are not {{'pair', 'quantile', 'nodes'}}")
    metric = choice(record.get("metric", measures.DEFAULT_METRIC), measures.METRICS, "distance")
    method = record.get("method")
    return {"pair": pair_id(session, record.get("pair")), "quantile": rf_quantile(session, record.get("quantile")),
            "metric": metric, "method": None if method is None else choice(method, measures.METHODS, "linkage"),
            "nodes": node_ids(session, record.get("nodes", []))}


MAX_LAYER_NAME = 200
"""Longest layer name accepted from the browser (names are module paths such as ``_blocks.14._bn1``)."""


def layer_name(graph: ModelGraph, value, what: str = "layer") -> str:
    """A layer of the model graph (an alias such as ``stem.2`` gives its layer name)."""
    if not isinstance(value, str) or not value or len(value) > MAX_LAYER_NAME:
        raise InvalidSelection(f"{what} {str(value)[:60]!r} is not a layer name")
    if value not in graph:
        close = difflib.get_close_matches(value, graph.names(), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise InvalidSelection(f"{what} {value!r} is not a layer of this model{hint}: the Architecture View shows "
                               f"its {len(graph)} layers")
    return graph.resolve(value)


def layer_names(graph: ModelGraph, values, what: str = "selected layer") -> list[str]:
    """A list of layers (a selection), in execution order; a layer named twice is an error."""
    if not isinstance(values, (list, tuple)):
        raise InvalidSelection(f"the selected layers {str(values)[:60]!r} are not a list of layer names")
    names = [layer_name(graph, v, what) for v in values]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise InvalidSelection(f"{what} {twice!r} is named twice")
    return graph.sort(names)


def channel_id(value, channels: int, layer: str) -> int | None:
    """A channel of ``layer`` (``channels`` of them); ``None`` passes."""
    if value is None:
        return None
    return _in_range(value, channels, "channel", f"layer {layer} ({channels} channels)")
