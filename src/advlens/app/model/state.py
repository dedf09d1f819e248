"""The Model page's selection: the ids of its ``dcc.Store`` components and the URL query that holds it.

Stores (names and ids only):

- ``model-selection``: the selected layers, names in execution order (sequential);
- ``model-focus``: the layer whose channels the gallery shows and the picked channel,
  ``{"layer": name or None, "channel": id or None}``;
- ``model-gallery-page``: the gallery page (0 …).

URL query (``/model?layers=stem,layer1&layer=layer2&channel=5``): ``layers`` the selection, ``layer`` and
``channel`` the focus. On the analysed layer the channel is the Neurons page's neuron, so ``neuron`` is
written too, and ``/model?neuron=40`` (what the navigation carries from the Neurons page) opens the
analysed layer's channel 40. The other shared keys (``true``, ``adv``, ``pair``) are kept as they are.
Every value is checked on the server; an invalid one is reported and left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from advlens.analysis import Session
from advlens.app import validate
from advlens.app.model import selection as layer_selection
from advlens.app.urls import SHARED_KEYS, make_query, parse_query
from advlens.errors import AdvlensError

SELECTION = "model-selection"
FOCUS = "model-focus"
PAGE = "model-gallery-page"
MESSAGE = "model-selection-message"
PROBLEMS = "model-url-problems"


@dataclass
class ModelState:
    """The selection the Model page opens on (checked) and what was wrong with the URL."""

    layers: list[str] = field(default_factory=list)
    layer: str | None = None
    channel: int | None = None
    problems: list[str] = field(default_factory=list)


def channel_count(session: Session, layer: str) -> int:
    """Channels of a layer (the first axis of its per-image output)."""
    return session.model.graph[layer].channels


def check_focus(session: Session, value) -> tuple[str | None, int | None]:
    """The focus record from the browser, ``{"layer": name, "channel": id}``, checked."""
    if value is None:
        return None, None
    if not isinstance(value, dict) or set(value) - {"layer", "channel"}:
        raise validate.InvalidSelection(f"focus {str(value)[:80]!r} is not {{'layer': name, 'channel': id}}")
    layer = value.get("layer")
    if layer is None:
        return None, None
    layer = validate.layer_name(session.model.graph, layer)
    return layer, validate.channel_id(value.get("channel"), channel_count(session, layer), layer)


def state_from_query(session: Session, search: str | None) -> ModelState:
    """Read the page's selection from the URL; each invalid value is reported and ignored."""
    params = parse_query(search)
    graph = session.model.graph
    state = ModelState()
    if "layers" in params:
        try:
            state.layers = layer_selection.check(graph, layer_selection.parse_layers(graph, params["layers"]))
        except AdvlensError as exc:
            state.problems.append(f"URL parameter layers={params['layers']!r}: {exc}")
    analysed = session.model.analysed_layer_name
    if "layer" in params:
        try:
            state.layer = validate.layer_name(graph, params["layer"])
        except AdvlensError as exc:
            state.problems.append(f"URL parameter layer={params['layer']!r}: {exc}")
    elif "neuron" in params:
        state.layer = analysed
    if state.layer is not None:
        key = "channel" if "channel" in params or "layer" in params else "neuron"
        if key in params:
            try:
                state.channel = validate.channel_id(params[key], channel_count(session, state.layer), state.layer)
            except AdvlensError as exc:
                state.problems.append(f"URL parameter {key}={params[key]!r}: {exc}")
    elif "channel" in params and "layer" not in params:
        state.problems.append("URL parameter channel needs a layer (layer=…); ignored")
    return state


def query_string(session: Session, layers: list[str], layer: str | None, channel: int | None,
                 current: str | None = None) -> str:
    """The URL query of a selection, keeping the shared keys of ``current`` (the URL now)."""
    kept = {key: value for key, value in parse_query(current).items() if key in SHARED_KEYS}
    params: dict[str, object] = {}
    if layers:
        params["layers"] = layer_selection.format_layers(layers)
    if layer is not None:
        params["layer"] = layer
        if channel is not None:
            params["channel"] = channel
            if layer == session.model.analysed_layer_name:
                kept["neuron"] = str(channel)
    return make_query({**params, **kept})
