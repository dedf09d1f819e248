"""The Neurons page's selection: the ids of its ``dcc.Store`` components and the URL query that holds it.

Stores (ids only, never arrays):

- ``selection``: the pairs picked in the Data Overview, ``{"pairs": [ids], "label": text, "cell": [true,
  adversarial] or None}``, or ``None`` when nothing is selected;
- ``pair``: the pair picked in the Image Grid (an id or ``None``);
- ``neuron``: the neuron picked in the Neuron Vulnerability View (an id or ``None``);
- ``nodes``: dendrogram node ids picked in the Neuron Cluster View, with the tree they refer to (pair, RF
  threshold, distance, linkage), ``{"pair": id, "quantile": level, "metric": name, "method": name,
  "nodes": [ids]}``, or ``None``;
- ``classes``: the classes the Data Overview shows, ``{"rows": [ids], "cols": [ids]}``;
- ``views pair``: the pair whose neuron views have arrived (see :data:`VIEWS_PAIR`);
- ``badge request`` (inside the Neuron Vulnerability View): the pair and ranking options whose faithfulness
  badges to compute, ``{"pair": id, "options": {...}}``, or ``None``.

URL query (``/neurons?true=6&adv=0&pair=12&neuron=40&measure=band_gap&sort=benign_drop``): ``true``/``adv``
is the selected Prediction Matrix cell (a lasso selection is not written: it may hold thousands of
pairs), ``pair`` and ``neuron`` the selected pair and neuron, ``measure`` the neuron order, ``sort`` the
Image Grid order; the what-if panel's ``edit`` (restore, attack, zero_adversarial, zero_benign), ``edit_of``
(neuron, cluster, top) and ``k`` (the top k); the Neuron Cluster View's selected subtrees ``nodes`` (node ids,
comma-separated, of the pair's dendrogram), its ``distance`` and ``linkage``, and the RF threshold ``rfq`` (a
stored quantile level) that the tree is built with. Values at their defaults are left out. Every value is
checked on the server; an invalid one is reported and left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from advlens import measures
from advlens.analysis import NEURON_MEASURES, SORT_ORDERS, Session
from advlens.app import validate
from advlens.app.urls import make_query
from advlens.errors import AdvlensError
from advlens.faithfulness.what_if import EDIT_MODES

SELECTION = "selection-store"
PAIR = "pair-store"
NEURON = "neuron-store"
NODES = "nodes-store"
CLASSES = "classes-store"
CONTEXT = "context-store"
MAPS_DRAWN = "maps-drawn-store"
"""The pair whose bMap/aMap the Receptive Field View has drawn (the badges are computed after them)."""
VIEWS_PAIR = "views-pair-store"
"""The pair whose three neuron views the browser has received (set in the browser when the dendrogram of a new
pair arrives, the slowest of the three). The page's secondary parts (the what-if panel, the links, the ranking
badges' request, the URL) follow it instead of the pair itself, so that a new pair's views get the browser first:
each callback costs the browser's Dash renderer time whether or not its output is in view."""
BADGE_REQUEST = "badge-request-store"
"""The pair and ranking options whose faithfulness badges to compute (see :mod:`advlens.app.neurons.badges`)."""

RF_QUANTILE = "rf-quantile"
BAND_KIND = "band-kind"
CLUSTER_METRIC = "cluster-metric"
CLUSTER_METHOD = "cluster-method"
TOP_PERCENT = "top-percent"
COMBINE_OP = "combine-op"

DEFAULT_MEASURE = "band_gap"
DEFAULT_SORT = "perturbation_asc"

EDIT_SOURCES = ("neuron", "cluster", "top")
"""What the what-if panel edits: the selected neuron, the selected dendrogram subtrees, the ranking's top k."""
DEFAULT_EDIT = "restore"
DEFAULT_EDIT_OF = "neuron"
DEFAULT_EDIT_K = 10

@dataclass
class NeuronsState:
    """The selection the Neurons page opens on (checked ids) and what was wrong with the URL."""

    cell: tuple[int, int] | None = None
    pair: int | None = None
    neuron: int | None = None
    measure: str = DEFAULT_MEASURE
    sort: str = DEFAULT_SORT
    edit: str = DEFAULT_EDIT
    edit_of: str = DEFAULT_EDIT_OF
    k: int | None = None
    nodes: list[int] = field(default_factory=list)
    metric: str = measures.DEFAULT_METRIC
    method: str | None = None
    quantile: float | None = None
    problems: list[str] = field(default_factory=list)

    def nodes_record(self, session: Session) -> dict | None:
        """The Neuron Cluster View's selection the page opens on (the ``nodes`` store), or ``None``."""
        if not self.nodes or self.pair is None:
            return None
        return {"pair": self.pair, "quantile": session.default_rf_quantile if self.quantile is None else self.quantile,
                "metric": self.metric, "method": self.method or measures.default_method(self.metric),
                "nodes": list(self.nodes)}


def node_list(session: Session, value: str) -> list[int]:
    """Dendrogram node ids written as ``12,300`` (each checked; repeats dropped)."""
    parts = [part.strip() for part in str(value).split(",")]
    if not any(parts):
        raise validate.InvalidSelection("no dendrogram node ids: write them as nodes=12,300")
    return list(dict.fromkeys(validate.node_ids(session, parts)))


def quantile_level(session: Session, value: str) -> float:
    """A stored RF threshold quantile level written in the URL (e.g. ``0.9``)."""
    try:
        number = float(value)
    except ValueError:
        number = value
    return validate.rf_quantile(session, number)


def cell_selection(session: Session, true_label: int, adversarial_label: int) -> dict:
    """The selection of one Prediction Matrix cell (as a click on it makes)."""
    names = session.class_names
    return {"pairs": [int(i) for i in session.pairs_in_cell(true_label, adversarial_label)],
            "label": f"{names[true_label]} → {names[adversarial_label]}", "cell": [true_label, adversarial_label]}


def state_from_query(session: Session, params: dict[str, str]) -> NeuronsState:
    """Read the page's selection from URL parameters; each invalid value is reported and ignored."""
    state = NeuronsState()

    def read(key, check):
        if key not in params:
            return None
        try:
            return check(params[key])
        except AdvlensError as exc:
            state.problems.append(f"URL parameter {key}={params[key]!r}: {exc}")
            return None

    true_label = read("true", lambda v: validate.class_id(session, v, "true class"))
    adv_label = read("adv", lambda v: validate.class_id(session, v, "adversarial class"))
    if ("true" in params) != ("adv" in params):
        state.problems.append("URL parameters true and adv name a Prediction Matrix cell together; "
                              "one of them alone is ignored")
    elif true_label is not None and adv_label is not None:
        state.cell = (true_label, adv_label)
    state.pair = read("pair", lambda v: validate.pair_id(session, v))
    state.neuron = read("neuron", lambda v: validate.neuron_id(session, v))
    state.measure = read("measure", lambda v: validate.choice(v, NEURON_MEASURES, "measure")) or DEFAULT_MEASURE
    state.sort = read("sort", lambda v: validate.choice(v, SORT_ORDERS, "sort order")) or DEFAULT_SORT
    state.edit = read("edit", lambda v: validate.choice(v, EDIT_MODES, "edit")) or DEFAULT_EDIT
    state.edit_of = read("edit_of", lambda v: validate.choice(v, EDIT_SOURCES, "edited selection")) or DEFAULT_EDIT_OF
    state.k = read("k", lambda v: edit_k(session, v)) or default_k(session)
    state.quantile = read("rfq", lambda v: quantile_level(session, v))
    state.metric = read("distance", lambda v: validate.choice(v, measures.METRICS, "distance")) or state.metric
    state.method = read("linkage", lambda v: validate.choice(v, measures.METHODS, "linkage"))
    if state.method is not None:
        from advlens.app.neurons.cluster_view import tree_choice

        try:
            tree_choice(state.metric, state.method)
        except AdvlensError as exc:
            state.problems.append(f"URL parameter linkage={params['linkage']!r}: {exc}")
            state.method = None
    state.nodes = read("nodes", lambda v: node_list(session, v)) or []
    if state.pair is not None:
        info = session.pair_info(state.pair)
        own = (info["label"], info["adv_pred"])
        if state.cell is not None and state.cell != own:
            names = session.class_names
            state.problems.append(
                f"pair {state.pair} ({names[own[0]]} → {names[own[1]]}) is not in the cell "
                f"{names[state.cell[0]]} → {names[state.cell[1]]} of the URL: showing the pair's own cell")
        state.cell = own
    elif state.nodes:
        state.problems.append("URL parameter nodes names subtrees of a pair's dendrogram: without a pair it is ignored")
        state.nodes = []
    return state


def default_k(session: Session) -> int:
    """The what-if panel's default number of top-ranked neurons: :data:`DEFAULT_EDIT_K`, at most every neuron."""
    return min(DEFAULT_EDIT_K, session.num_neurons)


def edit_k(session: Session, value) -> int:
    """A number of top-ranked neurons for the what-if panel, 1 … K (the analysed layer's neurons)."""
    k = validate.integer(default_k(session) if value is None else value, "k")
    if not 1 <= k <= session.num_neurons:
        raise validate.InvalidSelection(f"k {k} must be from 1 to {session.num_neurons} (the analysed layer's "
                                        "neurons)")
    return k


def initial_selection(session: Session, state: NeuronsState) -> dict | None:
    return None if state.cell is None else cell_selection(session, *state.cell)


def query_string(session: Session, selection: dict | None, pair: int | None, neuron: int | None,
                 measure: str | None, sort: str | None, edit: str | None = None, edit_of: str | None = None,
                 k: int | None = None, nodes: list[int] | None = None, quantile: float | None = None,
                 metric: str | None = None, method: str | None = None) -> str:
    """The URL query of a selection (``""`` when there is nothing to say).

    The cell is left out when it is the pair's own (the URL's pair opens its cell), so the URL stays short.
    ``nodes`` are the selected dendrogram nodes of the pair's tree (``quantile``, ``metric``, ``method``).
    """
    params: dict[str, object] = {}
    cell = list(selection["cell"]) if selection and selection.get("cell") else None
    if cell and pair is not None:
        info = session.pair_info(pair)
        cell = None if cell == [info["label"], info["adv_pred"]] else cell
    if cell:
        params["true"], params["adv"] = cell
    if pair is not None:
        params["pair"] = pair
    if neuron is not None:
        params["neuron"] = neuron
    if measure and measure != DEFAULT_MEASURE:
        params["measure"] = measure
    if sort and sort != DEFAULT_SORT:
        params["sort"] = sort
    if edit and edit != DEFAULT_EDIT:
        params["edit"] = edit
    if edit_of and edit_of != DEFAULT_EDIT_OF:
        params["edit_of"] = edit_of
    if k is not None and k != default_k(session):
        params["k"] = k
    if nodes and pair is not None:
        params["nodes"] = ",".join(str(int(n)) for n in nodes)
    if metric and metric != measures.DEFAULT_METRIC:
        params["distance"] = metric
    if method and method != measures.default_method(metric or measures.DEFAULT_METRIC):
        params["linkage"] = method
    if quantile is not None and quantile != session.default_rf_quantile:
        params["rfq"] = f"{quantile:g}"
    return make_query(params)


def page_of_pair(session: Session, selection: dict | None, pair: int | None, sort: str, page_size: int) -> int:
    """The Image Grid page that shows ``pair`` in the sorted selection (0 when it is not in it)."""
    if selection is None or pair is None:
        return 0
    ordered = session.sort_pairs(selection["pairs"], sort)
    where = np.flatnonzero(ordered == pair)
    return int(where[0]) // page_size if where.size else 0
