"""The Profiles page's selection: component ids, the checked state, and the URL query that holds it.

URL query (``/profiles?pair=12&layers=layer1,layer2,fc&layer=layer2&unit=5&colour=true&view=histograms``):

- ``pair`` (shared with every page): the foreground pair, 0 … P−1 (default 0);
- ``layers``: the Flow View's axes, comma separated, sequential (default: the profiles stage's layers);
- ``layer``: the layer the Layer View shows; ``unit``: its unit whose detail is open;
- ``colour``: ``pred`` (default) or ``true``; ``view``: ``lines`` (default) or ``histograms``;
- ``tau``: the diverging-point threshold in background IQRs (default 1, G-11);
- ``reduction`` (mean/max/difference/direct), ``set`` (``pair``, ``class:K``, ``group``), ``scalar``
  (max/abs_sum/auto), ``image`` (benign/adversarial, for ``direct``);
- the what-if panel's ``edit`` (restore, attack, zero_adversarial, zero_benign), ``edit_of`` (``top``: the
  layer's top k diverging units, ``unit``: the open unit) and ``k`` (default 10).

The Neurons page links here as ``/profiles?pair=N``. Every value is checked on the server; an invalid one
is reported and replaced by its default. Stores hold names and ids only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from advlens.analysis import Session
from advlens.analysis.profiles import COLOUR_BY, FLOW_MODES, IMAGES
from advlens.app import validate
from advlens.app.model import selection as layer_selection
from advlens.app.urls import QueryReader, SHARED_KEYS, make_query, parse_query
from advlens.errors import AdvlensError
from advlens.faithfulness.what_if import EDIT_MODES
from advlens.profiles import DEFAULT_THRESHOLD, REDUCTIONS, UNIT_SCALARS

PAIR = "profiles-pair"
LAYERS = "profiles-layers"
AXIS = "profiles-axis"
UNIT = "profiles-unit"
GROUP = "profiles-group"
COLOUR = "profiles-colour"
MODE = "profiles-mode"
BETA = "profiles-beta"
TAU = "profiles-tau"
REDUCTION = "profiles-reduction"
SET = "profiles-set"
SCALAR = "profiles-scalar"
IMAGE = "profiles-image"
PROBLEMS = "profiles-url-problems"

EDIT_OF = ("top", "unit")
"""What the what-if panel edits: the layer's top k diverging units, or the open unit."""
DEFAULT_EDIT = "restore"
DEFAULT_EDIT_OF = "top"
DEFAULT_EDIT_K = 10

DEFAULTS = {"colour": "pred", "view": "lines", "reduction": "difference", "set": "pair", "scalar": "auto",
            "image": "adversarial", "tau": DEFAULT_THRESHOLD, "edit": DEFAULT_EDIT, "edit_of": DEFAULT_EDIT_OF,
            "k": DEFAULT_EDIT_K}
TAU_RANGE = (0.05, 3.0)
"""The diverging-point threshold the page offers, in background IQRs (spec-002 G-11: default 1)."""


@dataclass
class ProfilesState:
    """The selection the page opens on (checked) and what was wrong with the URL."""

    pair: int = 0
    layers: list[str] = field(default_factory=list)
    layer: str | None = None
    unit: int | None = None
    colour: str = DEFAULTS["colour"]
    view: str = DEFAULTS["view"]
    reduction: str = DEFAULTS["reduction"]
    image_set: str = DEFAULTS["set"]
    scalar: str = DEFAULTS["scalar"]
    image: str = DEFAULTS["image"]
    tau: float = DEFAULT_THRESHOLD
    edit: str = DEFAULT_EDIT
    edit_of: str = DEFAULT_EDIT_OF
    k: int = DEFAULT_EDIT_K
    problems: list[str] = field(default_factory=list)


def check_layers(session: Session, layers) -> list[str]:
    """The axes from the browser: the stage's layers for an empty selection, else a checked sequential list."""
    if not layers:
        return session.profile_layers()
    try:
        return list(session.check_profile_layers(list(layers) if isinstance(layers, (list, tuple)) else layers))
    except AdvlensError as exc:
        raise validate.InvalidSelection(str(exc)) from None


def check_axis(session: Session, value) -> str | None:
    """The Layer View's layer (any layer of the model); None passes."""
    if value is None:
        return None
    return validate.layer_name(session.model.graph, value, "Layer View layer")


def check_unit(session: Session, layer: str | None, value) -> int | None:
    """A unit of the Layer View's layer; None passes (and is required without a layer)."""
    if value is None or layer is None:
        return None
    return validate.channel_id(value, session.model.graph[layer].channels, layer)


def check_set(session: Session, value) -> str:
    """``pair``, ``group`` or ``class:K``."""
    if value in ("pair", "group"):
        return value
    if isinstance(value, str) and value.startswith("class:"):
        validate.class_id(session, value[6:], "background class")
        return f"class:{int(value[6:])}"
    raise validate.InvalidSelection(f"image set {str(value)[:40]!r} is not pair, group or class:K")


def check_edit_k(value) -> int:
    """The what-if panel's number of top diverging units, a whole number ≥ 1 (a layer with fewer units edits them
    all)."""
    k = validate.integer(value, "k")
    if k < 1:
        raise validate.InvalidSelection(f"k {k} must be at least 1")
    return k


def check_tau(value) -> float:
    """The diverging-point threshold (IQRs) from the URL (a number string) or the slider."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise validate.InvalidSelection(f"threshold {value!r} is not a number") from None
    return validate.number(value, "threshold τ", *TAU_RANGE)


def state_from_query(session: Session, search: str | None) -> ProfilesState:
    """Read the page's selection from the URL (the stage must exist); invalid values are reported and dropped."""
    params = parse_query(search)
    state = ProfilesState()

    read = QueryReader(params, state.problems)

    state.pair = read("pair", lambda v: validate.pair_id(session, v), 0)
    graph = session.model.graph
    state.layers = read("layers", lambda v: check_layers(session, layer_selection.parse_layers(graph, v)),
                        session.profile_layers())
    state.layer = read("layer", lambda v: check_axis(session, v), None)
    state.unit = read("unit", lambda v: check_unit(session, state.layer, v), None)
    state.colour = read("colour", lambda v: validate.choice(v, COLOUR_BY, "colour by"), DEFAULTS["colour"])
    state.view = read("view", lambda v: validate.choice(v, FLOW_MODES, "view"), DEFAULTS["view"])
    state.reduction = read("reduction", lambda v: validate.choice(v, REDUCTIONS, "reduction"), DEFAULTS["reduction"])
    state.image_set = read("set", lambda v: check_set(session, v), DEFAULTS["set"])
    if state.image_set == "group":
        state.problems.append("URL parameter set=group: a brushed group is not kept in the URL; brush an axis again")
        state.image_set = "pair"
    state.scalar = read("scalar", lambda v: validate.choice(v, UNIT_SCALARS, "unit scalar"), DEFAULTS["scalar"])
    state.image = read("image", lambda v: validate.choice(v, IMAGES, "image"), DEFAULTS["image"])
    state.tau = read("tau", lambda v: check_tau(v), DEFAULT_THRESHOLD)
    state.edit = read("edit", lambda v: validate.choice(v, EDIT_MODES, "edit"), DEFAULT_EDIT)
    state.edit_of = read("edit_of", lambda v: validate.choice(v, EDIT_OF, "edited units"), DEFAULT_EDIT_OF)
    state.k = read("k", check_edit_k, DEFAULT_EDIT_K)
    return state


def query_string(session: Session, pair: int, layers: list[str], layer: str | None, unit: int | None,
                 options: dict[str, str], current: str | None = None) -> str:
    """The URL query of a selection (defaults left out); the other shared keys of ``current`` are kept."""
    kept = {k: v for k, v in parse_query(current).items() if k in SHARED_KEYS and k != "pair"}
    params: dict[str, object] = {"pair": pair}
    if list(layers) != session.profile_layers():
        params["layers"] = layer_selection.format_layers(layers)
    if layer is not None:
        params["layer"] = layer
        if unit is not None:
            params["unit"] = unit
    for key, value in options.items():
        if key == "tau":
            value = round(float(value), 3)
        if value != DEFAULTS[key] and not (key == "set" and value == "group"):
            params[key] = value
    return make_query({**params, **kept})
