"""The Pathways page's selection: component ids, the checked state, and the URL query that holds it.

URL query (``/pathways?true=0&adv=6&attack=pgd&eps=8&mode=excited&x=20&filter=all&pinned=layer4:12``):

- ``true``/``adv``: the class pair (original → target; the keys every page shares);
- ``attack``: an attack of the sweep (``pgd``, ``fgsm``); ``eps``: the strength in 1/255 units, ``0`` = the
  benign pathways (a strength of the sweep, else refused);
- ``mode``: highlight mode (activated, changed, excited, inhibited) and ``x`` the top percentage per layer;
- ``filter``: all / pinned / highlighted; ``pinned``: ``layer:channel`` neurons, comma separated;
- ``compare``: ``strengths`` (the ``eps`` strength against ``vs``) or ``attacks`` (the sweep's two attacks at
  ``eps``); absent: no comparison;
- ``edit``: the what-if panel's edit of the pinned neurons (``restore``, ``attack``, ``zero_adversarial``,
  ``zero_benign``; absent: restore), as on the Neurons page;
- ``neuron`` (shared with the Neurons page): a channel of the analysed layer whose detail the page opens on
  (``/pathways?true=6&adv=0&neuron=40`` is what the Neurons page links to); ``pair`` is kept as it is.

Every value is checked on the server; an invalid one is reported and replaced by its default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from advlens.analysis import Session
from advlens.app import validate
from advlens.app.what_if import DEFAULT_MODE as DEFAULT_EDIT
from advlens.app.what_if import MODE_LABELS as EDIT_LABELS
from advlens.app.urls import QueryReader, SHARED_KEYS, make_query, parse_query
from advlens.errors import AdvlensError
from advlens.pathways import HIGHLIGHT_MODES

PAIR = "pathways-pair"
ATTACK = "pathways-attack"
STRENGTH = "pathways-strength"
MODE = "pathways-mode"
TOP = "pathways-top"
FILTER = "pathways-filter"
COMPARE = "pathways-compare"
VS = "pathways-vs"
VS_BOX = "pathways-vs-box"
PINNED = "pathways-pinned"
FOCUS = "pathways-focus"
GRAPH = "pathways-graph"
PROBLEMS = "pathways-url-problems"

FILTERS = ("all", "pinned", "highlighted")
COMPARES = ("none", "strengths", "attacks")
DEFAULT_MODE = "activated"
DEFAULT_TOP = 20
MAX_PINNED = 64


@dataclass
class PathwaysState:
    """The selection the page opens on (checked) and what was wrong with the URL.

    ``strength`` and ``vs`` index the strengths with 0 = benign: 0 … E (strength s > 0 is ``eps[s − 1]``).
    """

    original: int
    target: int
    attack: str
    strength: int = 0
    mode: str = DEFAULT_MODE
    top: int = DEFAULT_TOP
    filter: str = "all"
    pinned: list[list] = field(default_factory=list)
    compare: str = "none"
    vs: int = 0
    edit: str = DEFAULT_EDIT
    focus: list | None = None
    problems: list[str] = field(default_factory=list)


def strength_label(eps: np.ndarray, strength: int) -> str:
    """``"benign"`` for 0, else ``"8/255"``."""
    return "benign" if strength == 0 else f"{float(eps[strength - 1]) * 255:g}/255"


def strength_of(session: Session, value) -> int:
    """The strength index (0 = benign, s = ``eps[s − 1]``) of a URL value in 1/255 units."""
    eps = session.sweep_info().eps
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise validate.InvalidSelection(f"strength {value!r} is not a number (1/255 units, 0 = benign)") from None
    if number == 0:
        return 0
    hit = np.flatnonzero(np.isclose(eps * 255, number, rtol=1e-4, atol=1e-6)) if math.isfinite(number) else []
    if not len(hit):
        raise validate.InvalidSelection(f"strength {value!r}/255 is not in the sweep; its strengths are 0 (benign), "
                                        f"{', '.join(f'{e * 255:g}' for e in eps)} (/255)")
    return int(hit[0]) + 1


def strength_index(session: Session, value) -> int:
    """A strength index from the browser (a slider value 0 … E), checked."""
    count = len(session.sweep_info().eps)
    number = validate.integer(value, "strength")
    if not 0 <= number <= count:
        raise validate.InvalidSelection(f"strength index {number} does not exist: the sweep has strengths 0 (benign) "
                                        f"… {count}")
    return number


def check_pinned(session: Session, values) -> list[list]:
    """Pinned neurons ``[[layer, channel], …]`` from the browser, checked (order kept, no repeats)."""
    if values is None:
        return []
    if not isinstance(values, (list, tuple)) or len(values) > MAX_PINNED:
        raise validate.InvalidSelection(f"pinned neurons {str(values)[:60]!r} are not a list of at most "
                                        f"{MAX_PINNED} [layer, channel] pairs")
    out: list[list] = []
    for item in values:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise validate.InvalidSelection(f"pinned neuron {str(item)[:40]!r} is not [layer, channel]")
        layer = item[0]
        try:
            index = session.check_pathway_layer(layer)
        except AdvlensError as exc:
            raise validate.InvalidSelection(str(exc)) from None
        channel = validate.channel_id(validate.integer(item[1], "channel"), int(session.sweep_info().channels[index]),
                                      layer)
        if [layer, channel] not in out:
            out.append([layer, channel])
    return out


def parse_pinned(text: str) -> list[list]:
    """``"layer4:12,layer3:5"`` → ``[["layer4", "12"], ["layer3", "5"]]`` (checked by :func:`check_pinned`)."""
    out = []
    for part in filter(None, text.split(",")):
        layer, sep, channel = part.rpartition(":")
        if not sep:
            raise validate.InvalidSelection(f"pinned neuron {part[:40]!r} is not layer:channel")
        out.append([layer, channel])
    return out


def default_pair(session: Session, attack: str) -> tuple[int, int]:
    """The class pair the attack maps most often (the first of the picker)."""
    pairs = session.pathway_class_pairs(attack)
    return int(pairs.original[0]), int(pairs.target[0])


def state_from_query(session: Session, search: str | None) -> PathwaysState:
    """Read the page's selection from the URL (the sweep must exist); invalid values are reported and dropped."""
    params = parse_query(search)
    problems: list[str] = []

    read = QueryReader(params, problems)

    attacks = session.sweep_info().attacks
    attack = read("attack", lambda v: validate.choice(v, attacks, "attack"), "pgd" if "pgd" in attacks else attacks[0])
    original = read("true", lambda v: validate.class_id(session, v, "original class"), None)
    target = read("adv", lambda v: validate.class_id(session, v, "target class"), None)
    if original is not None and original == target:
        problems.append(f"URL parameters true and adv name the same class {original}: a class pair needs two")
        original = target = None
    elif ("true" in params or "adv" in params) and (original is None or target is None):
        if "true" in params and "adv" in params:
            pass  # the bad one is reported above
        else:
            problems.append("URL parameters true and adv name a class pair together; one of them alone is ignored")
        original = target = None
    if original is None:
        original, target = default_pair(session, attack)
    state = PathwaysState(original=original, target=target, attack=attack, problems=problems)
    state.strength = read("eps", lambda v: strength_of(session, v), len(session.sweep_info().eps))
    state.mode = read("mode", lambda v: validate.choice(v, HIGHLIGHT_MODES, "highlight mode"), DEFAULT_MODE)
    state.top = read("x", lambda v: int(validate.number(validate.integer(v, "top percentage"), "top percentage",
                                                        1, 100)), DEFAULT_TOP)
    state.filter = read("filter", lambda v: validate.choice(v, FILTERS, "filter"), "all")
    state.pinned = read("pinned", lambda v: check_pinned(session, parse_pinned(v)), [])
    state.compare = read("compare", lambda v: validate.choice(v, COMPARES, "compare mode"), "none")
    state.vs = read("vs", lambda v: strength_of(session, v), len(session.sweep_info().eps))
    state.edit = read("edit", lambda v: validate.choice(v, EDIT_LABELS, "edit"), DEFAULT_EDIT)
    neuron = read("neuron", lambda v: validate.neuron_id(session, v), None)
    analysed = session.model.analysed_layer_name
    if neuron is not None and analysed in session.sweep_info().layers:
        state.focus = [analysed, neuron]
    if state.pinned:
        state.focus = state.pinned[-1]
    return state


def query_string(session: Session, original: int, target: int, attack: str, strength: int, mode: str, top: int,
                 filter_: str, pinned: list[list], compare: str, vs: int, current: str | None = None,
                 edit: str = DEFAULT_EDIT) -> str:
    """The URL query of a selection; the other shared keys of ``current`` (pair, neuron) are kept."""
    eps = session.sweep_info().eps
    kept = {k: v for k, v in parse_query(current).items() if k in SHARED_KEYS and k not in ("true", "adv")}
    params: dict[str, object] = {"true": original, "adv": target, "attack": attack,
                                 "eps": 0 if strength == 0 else f"{float(eps[strength - 1]) * 255:g}"}
    if mode != DEFAULT_MODE:
        params["mode"] = mode
    if top != DEFAULT_TOP:
        params["x"] = top
    if filter_ != "all":
        params["filter"] = filter_
    if pinned:
        params["pinned"] = ",".join(f"{layer}:{channel}" for layer, channel in pinned)
    if compare != "none":
        params["compare"] = compare
        if compare == "strengths":
            params["vs"] = 0 if vs == 0 else f"{float(eps[vs - 1]) * 255:g}"
    if edit != DEFAULT_EDIT:
        params["edit"] = edit
    return make_query({**params, **kept})
