"""The Datapaths page's selection: component ids, checks of everything the browser sends, and the URL query.

URL query (``/datapaths?pair=12&layer=layer3&map=17&expand=layer2,layer3&encoding=activation&diff=src-adv``):

- ``pair`` (shared with every page): the adversarial example whose datapaths are shown;
- ``layer``: the gate layer open in the layer view; ``map``: its feature map open in the neuron view;
- ``expand``: layer groups shown one column per gate point in the river;
- ``encoding``: the treemap's ``activation`` difference or ``contribution``; ``diff``: the ordered pair of the
  difference (``src-adv`` …, ``auto``: src − adv at a diverging layer, adv − tar at a merging one);
- ``edit``: the what-if panel's edit (``restore``, ``attack``, ``zero_adversarial``, ``zero_benign``) and
  ``edit_of`` the maps it edits at the open layer (``adv``, ``src``, ``tar``: that datapath's critical maps;
  ``map``: the open map).

The area of interest and the chain of contribution steps (the breadcrumb) live in ``dcc.Store`` components:
the AOI as a box or a lasso polygon in fractions of the map's extent (so it stays on the same image region
from layer to layer), the chain as a list of steps of ids. Every value is checked on the server; a bad URL
value is reported and replaced by its default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from advlens.analysis import Session
from advlens.app import validate
from advlens.app.urls import QueryReader, SHARED_KEYS, make_query, parse_query
from advlens.faithfulness.what_if import EDIT_MODES

PAIR = "dp-pair"
READY = "dp-ready"
LAYER = "dp-layer"
MAP = "dp-map"
EXPANDED = "dp-expanded"
AOI = "dp-aoi"
TRACE = "dp-trace"
ENCODING = "dp-encoding"
DIFF = "dp-diff"
SOURCE = "dp-source"
METHOD = "dp-method"
ROLE = "dp-role"
PROBLEMS = "dp-url-problems"

ENCODINGS = ("activation", "contribution")
ROLES = ("adv", "src", "tar")
DIFFS = ("auto", *(f"{a}-{b}" for a in ROLES for b in ROLES if a != b))
METHODS = ("sgd", "fast")
CONTRIBUTION_ROLES = ("auto", *ROLES)
EDIT_OF = ("adv", "src", "tar", "map")
"""What the what-if panel edits at the open layer: a datapath's critical maps, or the open map."""
DEFAULT_EDIT = "restore"
DEFAULT_EDIT_OF = "adv"
MAX_STEPS = 32
MAX_POLYGON = 400


@dataclass
class DatapathsState:
    """The selection the page opens on (checked) and what was wrong with the URL."""

    pair: int | None = None
    layer: str | None = None
    map: int | None = None
    expanded: list[str] = field(default_factory=list)
    encoding: str = "activation"
    diff: str = "auto"
    edit: str = DEFAULT_EDIT
    edit_of: str = DEFAULT_EDIT_OF
    problems: list[str] = field(default_factory=list)


def gate_names(session: Session) -> list[str]:
    return [g.name for g in session.datapath_layers()]


def groups(session: Session) -> list[tuple[str, list[str]]]:
    """The layer groups (name, gate points) in depth order."""
    out: list[tuple[str, list[str]]] = []
    for gate in session.datapath_layers():
        if out and out[-1][0] == gate.group:
            out[-1][1].append(gate.name)
        else:
            out.append((gate.group, [gate.name]))
    return out


def check_layer(session: Session, value) -> str | None:
    """A gate layer (``None`` passes)."""
    if value is None:
        return None
    names = gate_names(session)
    if not isinstance(value, str) or value not in names:
        raise validate.InvalidSelection(f"layer {str(value)[:60]!r} is not a gate layer of the datapaths; the gate "
                                        f"layers are {', '.join(names)}")
    return value


def check_map(session: Session, layer: str | None, value) -> int | None:
    """A feature map of ``layer`` (``None`` passes; a map without a layer is refused)."""
    if value is None:
        return None
    if layer is None:
        raise validate.InvalidSelection("a feature map needs a layer: open a layer first")
    gate = session.check_datapath_layer(layer)
    return validate.channel_id(validate.integer(value, "map"), gate.channels, layer)


def check_groups(session: Session, values) -> list[str]:
    """Expanded layer groups (a list of group names, each once)."""
    if values is None:
        return []
    names = [name for name, _ in groups(session)]
    if not isinstance(values, (list, tuple)) or len(values) > len(names):
        raise validate.InvalidSelection(f"expanded groups {str(values)[:60]!r} are not a list of group names")
    out = []
    for value in values:
        if value not in names:
            raise validate.InvalidSelection(f"{str(value)[:60]!r} is not a layer group; the groups are "
                                            f"{', '.join(names)}")
        if value not in out:
            out.append(value)
    return out


def _fraction(value, what: str) -> float:
    return validate.number(value, what, 0.0, 1.0)


def check_aoi(value) -> dict | None:
    """An area of interest: ``{"kind": "box", "x": [x0, x1], "y": [y0, y1]}`` or ``{"kind": "lasso", "x": [...],
    "y": [...]}`` in fractions of the map's width and height (0 … 1); ``None`` = the whole map."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or value.get("kind") not in ("box", "lasso"):
        raise validate.InvalidSelection(f"area of interest {str(value)[:60]!r} is not a box or a lasso")
    xs, ys = value.get("x"), value.get("y")
    if not isinstance(xs, (list, tuple)) or not isinstance(ys, (list, tuple)) or len(xs) != len(ys):
        raise validate.InvalidSelection("an area of interest needs as many x as y coordinates")
    if value["kind"] == "box" and len(xs) != 2 or value["kind"] == "lasso" and not 3 <= len(xs) <= MAX_POLYGON:
        raise validate.InvalidSelection(f"a box needs two corners and a lasso 3 to {MAX_POLYGON} points")
    x = [_fraction(v, "AOI x") for v in xs]
    y = [_fraction(v, "AOI y") for v in ys]
    if value["kind"] == "box":
        x, y = sorted(x), sorted(y)
    return {"kind": value["kind"], "x": x, "y": y}


def inside_polygon(px: np.ndarray, py: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Whether points lie inside a closed polygon (even–odd rule: a ray to the right crosses its edges an odd
    number of times). Shape: px, py (...) and xs, ys (V,) → (...) bool."""
    inside = np.zeros(np.shape(px), dtype=bool)
    for x0, y0, x1, y1 in zip(xs, ys, np.roll(xs, -1), np.roll(ys, -1)):
        straddles = (y0 > py) != (y1 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            cross = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
        inside ^= straddles & (px < cross)
    return inside


def aoi_cells(aoi: dict | None, grid: tuple[int, int]) -> np.ndarray | None:
    """The cells of an ``h × w`` grid whose centres lie in the AOI (None: the whole map; an AOI that misses every
    centre takes the cell under its middle). Shape: (h, w) bool."""
    if aoi is None:
        return None
    h, w = grid
    rows, cols = np.mgrid[0:h, 0:w]
    cx, cy = (cols + 0.5) / w, (rows + 0.5) / h
    if aoi["kind"] == "box":
        mask = (cx >= aoi["x"][0]) & (cx <= aoi["x"][1]) & (cy >= aoi["y"][0]) & (cy <= aoi["y"][1])
    else:
        mask = inside_polygon(cx, cy, np.asarray(aoi["x"]), np.asarray(aoi["y"]))
    if not mask.any():
        mx, my = float(np.mean(aoi["x"])), float(np.mean(aoi["y"]))
        mask[min(h - 1, int(my * h)), min(w - 1, int(mx * w))] = True
    return mask


def check_step(session: Session, value) -> dict:
    """One contribution step: ``{"layer", "map", "source", "method", "role", "aoi"}``."""
    if not isinstance(value, Mapping):
        raise validate.InvalidSelection(f"contribution step {str(value)[:60]!r} is not a record")
    layer = check_layer(session, value.get("layer"))
    source = check_layer(session, value.get("source"))
    if layer is None or source is None:
        raise validate.InvalidSelection("a contribution step needs a target layer and a source layer")
    return {"layer": layer, "map": check_map(session, layer, value.get("map")), "source": source,
            "method": validate.choice(value.get("method"), METHODS, "method"),
            "role": validate.choice(value.get("role"), ROLES, "role"), "aoi": check_aoi(value.get("aoi"))}


def check_trace(session: Session, values) -> list[dict]:
    """The chain of contribution steps (the breadcrumb)."""
    if values is None:
        return []
    if not isinstance(values, (list, tuple)) or len(values) > MAX_STEPS:
        raise validate.InvalidSelection(f"the contribution chain is not a list of at most {MAX_STEPS} steps")
    return [check_step(session, v) for v in values]


def state_from_query(session: Session, search: str | None) -> DatapathsState:
    """Read the page's selection from the URL; invalid values are reported and dropped."""
    params = parse_query(search)
    state = DatapathsState()

    read = QueryReader(params, state.problems)

    state.pair = read("pair", lambda v: validate.pair_id(session, v), None)
    state.layer = read("layer", lambda v: check_layer(session, v), None)
    if state.layer is not None:
        state.map = read("map", lambda v: check_map(session, state.layer, v), None)
    elif "map" in params:
        state.problems.append("URL parameter map needs a layer; it is ignored")
    state.expanded = read("expand", lambda v: check_groups(session, [g for g in v.split(",") if g]), [])
    state.encoding = read("encoding", lambda v: validate.choice(v, ENCODINGS, "encoding"), "activation")
    state.diff = read("diff", lambda v: validate.choice(v, DIFFS, "difference"), "auto")
    state.edit = read("edit", lambda v: validate.choice(v, EDIT_MODES, "edit"), DEFAULT_EDIT)
    state.edit_of = read("edit_of", lambda v: validate.choice(v, EDIT_OF, "edited maps"), DEFAULT_EDIT_OF)
    return state


def query_string(pair: int | None, layer: str | None, map_: int | None, expanded: list[str], encoding: str,
                 diff: str, current: str | None = None, edit: str = DEFAULT_EDIT,
                 edit_of: str = DEFAULT_EDIT_OF) -> str:
    """The URL query of a selection; the other shared keys of ``current`` (true, adv, neuron) are kept."""
    kept = {k: v for k, v in parse_query(current).items() if k in SHARED_KEYS and k != "pair"}
    params: dict[str, object] = {}
    if pair is not None:
        params["pair"] = pair
    if layer is not None:
        params["layer"] = layer
        if map_ is not None:
            params["map"] = map_
    if expanded:
        params["expand"] = ",".join(expanded)
    if encoding != "activation":
        params["encoding"] = encoding
    if diff != "auto":
        params["diff"] = diff
    if edit != DEFAULT_EDIT:
        params["edit"] = edit
    if edit_of != DEFAULT_EDIT_OF:
        params["edit_of"] = edit_of
    return make_query({**params, **kept})
