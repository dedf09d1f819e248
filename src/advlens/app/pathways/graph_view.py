"""The Graph Summary View panel: the pathway graph of the chosen class pair at the chosen setting, its
caption and legend, the set sizes, and pinning by click.

The first graph of a class pair computes the edges' influences (a few seconds on the demo model; a busy
indicator shows); later settings of the same pair redraw from the cached graph.
"""

from __future__ import annotations

from dash import Dash, Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from advlens.analysis import Session
from advlens.analysis.pathways import MIN_IMAGES, PathwayGraph
from advlens.app import common, validate
from advlens.app.common import GRAPH_CONFIG, guarded
from advlens.app.model.tiles import feature_url
from advlens.app.pathways import display as show
from advlens.app.pathways.controls import CLEAR_PINS, PINS, SETS, pair_options
from advlens.app.pathways.graph_figure import group_color, pathway_figure
from advlens.app.pathways.state import (
    ATTACK,
    COMPARE,
    COMPARES,
    FILTER,
    FILTERS,
    GRAPH,
    MODE,
    PAIR,
    PINNED,
    STRENGTH,
    TOP,
    VS,
    VS_BOX,
    check_pinned,
    strength_index,
    strength_label,
)
from advlens.errors import AdvlensError
from advlens.pathways import GROUPS, HIGHLIGHT_MODES

CAPTION = "pathways-caption"
PAGE_MAX_IMAGES = 64
"""Images per set the page's influences are medians over (the analysis default is 200): the first graph of a
pair costs about 4 s of CPU on the 200-image demo store, and grows with the images of each set. The what-if panel
edits the same sample of the attacked set."""
LEGEND = "pathways-legend"
GROUP_LABELS = {"original": "original only", "both": "both classes", "target": "target only",
                "attack": "attack only", "pinned": "pinned (outside the groups)"}


def check_pair(session: Session, value) -> tuple[int, int]:
    """A class pair ``"o-t"`` from the picker, checked."""
    if not isinstance(value, str) or value.count("-") != 1:
        raise validate.InvalidSelection(f"class pair {str(value)[:40]!r} is not 'original-target'")
    first, second = value.split("-")
    original = validate.class_id(session, first, "original class")
    target = validate.class_id(session, second, "target class")
    if original == target:
        raise validate.InvalidSelection(f"class pair {value!r} names one class twice")
    return original, target


def checked_controls(session: Session, pair, attack, strength, mode, top, filter_, compare, vs, pinned) -> dict:
    """Every control value from the browser, checked."""
    original, target = check_pair(session, pair)
    return {"original": original, "target": target,
            "attack": validate.choice(attack, session.sweep_info().attacks, "attack"),
            "strength": strength_index(session, strength), "mode": validate.choice(mode, HIGHLIGHT_MODES, "highlight"),
            "top": int(validate.number(top, "top percentage", 1, 100)),
            "filter": validate.choice(filter_, FILTERS, "filter"),
            "compare": validate.choice(compare, COMPARES, "compare mode"), "vs": strength_index(session, vs),
            "pinned": check_pinned(session, pinned)}


def node_urls(session: Session, graph: PathwayGraph) -> list[str | None]:
    """Each node's feature-visualisation tile URL (None without a features stage or for an uncovered layer)."""
    try:
        library = session.features
    except AdvlensError:
        return [None] * graph.num_nodes
    index = {layer: library.layers().index(layer) for layer in graph.layers if library.has(layer)}
    return [feature_url(index[graph.layers[layer]], channel) if graph.layers[layer] in index else None
            for layer, channel in zip(graph.node_layer.tolist(), graph.node_channel.tolist())]


def hover_texts(session: Session, graph: PathwayGraph, strength: int) -> list[str]:
    names = [*GROUPS, "pinned"]
    importance, excitation, valid = show.node_values(graph, strength)
    label = strength_label(graph.eps, strength)
    texts = []
    for node in range(graph.num_nodes):
        group = GROUP_LABELS[names[int(graph.node_group[node])]]
        lines = [f"<b>{graph.layers[int(graph.node_layer[node])]} · channel {int(graph.node_channel[node])}</b>",
                 group, f"importance: original {common.fmt(float(graph.importance[0, node]))}, "
                        f"target {common.fmt(float(graph.importance[1, node]))}"]
        if strength and valid:
            lines.append(f"attacked at {label}: {common.fmt(float(importance[node]))} "
                         f"(excitation {float(excitation[node]):+.3g})")
        texts.append("<br>".join(lines))
    return texts


def set_summary(session: Session, graph: PathwayGraph, strength: int, compare: str, vs: int) -> list:
    """Set sizes, with the too-few-images flag of spec-004 §1."""
    names = session.class_names
    few = graph.too_few()

    def size(count: int, flagged: bool) -> list:
        return [html.B(f"{count}"), html.Span(" — too few images", className="pw-few") if flagged else ""]

    counts = graph.counts()
    items = [html.Li(["original (", names[graph.original], "): ", *size(int(graph.original_count), few["original"]),
                      " benign"]),
             html.Li(["target (", names[graph.target], "): ", *size(int(graph.target_count), few["target"]),
                      " benign"])]
    shown = sorted({strength, vs}) if compare == "strengths" else [strength]
    for s in shown:
        if s:
            items.append(html.Li([f"attacked at {strength_label(graph.eps, s)}: ",
                                  *size(int(counts[s - 1]), bool(few["attacked"][s - 1])), " predicted ",
                                  names[graph.target]]))
    sampled = session.pathway_class_pairs(graph.attack).sampled[graph.original]
    note = (f"attacked images: of {sampled} sampled {names[graph.original]} images; influences: medians over ≤ "
            f"{graph.max_images} images per set; sets under {MIN_IMAGES} images are flagged")
    return [html.Ul(items, className="pw-set-list"), html.Div(note, className="pw-hint")]


def legend(compare: str, graph: PathwayGraph | None = None) -> list:
    if compare == "none":
        names = [*GROUPS, "pinned"]
        present = set(graph.node_group.tolist()) if graph is not None else set(range(len(GROUPS)))
        items = [html.Span([html.Span(className="chip square", style={"background": group_color(g)}),
                            GROUP_LABELS[names[g]]], className="legend-item") for g in sorted(present)]
        items.append(html.Span("· edge width ∝ influence (one scale per pair of layers); dark edges: the strongest "
                               "30%; faded nodes: outside the top x%", className="legend-item"))
        return items
    if compare == "strengths":
        first, second = "weaker", "stronger"
    elif graph is not None:
        other = next((a for a in graph.attacks if a != graph.attack), graph.attack)
        first, second = graph.attack.upper(), other.upper()
    else:
        first, second = "this attack", "the other attack"
    glyphs = [(f"{first} only", True, False), (f"{second} only", False, True), ("both", True, True),
              ("neither", False, False)]
    items = [html.Span([html.Span(html.Span(className="pw-inner" + (" on" if inner else "")),
                                  className="pw-outer" + (" on" if outer else "")), label], className="legend-item")
             for label, inner, outer in glyphs]
    items.append(html.Span(f"· inner square: in the {first} pathway (top x% under the highlight mode); outer: in the "
                           f"{second}; filled in the node's group colour", className="legend-item"))
    return items


def draw(session: Session, pair, attack, strength, mode, top, filter_, compare, vs, pinned) -> tuple:
    """(figure, caption, legend, set summary, pinned list, stronger-slider style) of one setting."""
    c = checked_controls(session, pair, attack, strength, mode, top, filter_, compare, vs, pinned)
    graph = session.pathway_graph(c["original"], c["target"], c["attack"], max_images=PAGE_MAX_IMAGES,
                                  pinned=[tuple(p) for p in c["pinned"]])
    shown = show.display(graph, c["strength"], c["mode"], c["top"], c["filter"], c["pinned"], c["compare"], c["vs"])
    pins = show.pinned_mask(graph, c["pinned"])
    urls = node_urls(session, graph)
    fig = pathway_figure(graph, shown, urls, hover_texts(session, graph, c["strength"]), pins,
                         session.class_names, compare=c["compare"] != "none")
    names = session.class_names
    label = strength_label(graph.eps, c["strength"])
    what = {"none": f"at {label}" if c["strength"] else "benign pathways",
            "strengths": f"{strength_label(graph.eps, min(c['strength'], c['vs']))} vs "
                         f"{strength_label(graph.eps, max(c['strength'], c['vs']))}",
            "attacks": f"{' vs '.join(a.upper() for a in graph.attacks)} at {label}"}[c["compare"]]
    caption = (f"{names[graph.original]} → {names[graph.target]} · {c['attack'].upper()} · {what} · "
               f"highlight: {c['mode']} (top {c['top']}% of each layer's drawn neurons) · "
               f"{graph.num_nodes} neurons in {len(graph.layers)} layers; hover a neuron for its detail, click to pin")
    empty = [n for n in ({c["strength"], c["vs"]} if c["compare"] == "strengths" else {c["strength"]})
             if n and graph.counts()[n - 1] == 0]
    if empty:
        caption += (f" · no sampled {names[graph.original]} image is predicted {names[graph.target]} at "
                    f"{', '.join(strength_label(graph.eps, n) for n in sorted(empty))}: nothing to highlight there")
    pin_list = ([html.Span("Pinned: ", className="pw-label"),
                 *[html.Span(f"{layer}:{channel}", className="selection-chip") for layer, channel in c["pinned"]]]
                if c["pinned"] else [html.Span("Click a neuron to pin it.", className="pw-hint")])
    return (fig, caption, legend(c["compare"], graph), set_summary(session, graph, c["strength"], c["compare"],
                                                                    c["vs"]), pin_list,
            {} if c["compare"] == "strengths" else {"display": "none"})


@guarded(lambda text: (common.error_figure(text), "", [], [], [], no_update))
def draw_view(session: Session, *args) -> tuple:
    return draw(session, *args)


@guarded(lambda text: no_update)
def toggle_pin(session: Session, click, pinned) -> list:
    """The pinned neurons with the clicked one added or removed."""
    if not isinstance(click, dict) or not click.get("points"):
        raise PreventUpdate
    custom = click["points"][0].get("customdata")
    if not isinstance(custom, (list, tuple)) or len(custom) != 2:
        raise PreventUpdate  # an edge or a label, not a neuron
    node = check_pinned(session, [custom])[0]
    pinned = check_pinned(session, pinned)
    return [p for p in pinned if p != node] if node in pinned else [*pinned, node]


@guarded(lambda text: no_update)
def refresh_pairs(session: Session, attack, current=None) -> list:
    """The class pair picker for another attack (its counts differ), keeping the pair shown."""
    try:
        keep = check_pair(session, current)
    except AdvlensError:
        keep = None  # a bad value from the browser keeps nothing extra in the list
    return pair_options(session, validate.choice(attack, session.sweep_info().attacks, "attack"), keep)


def layout() -> html.Section:
    return common.panel("Graph summary", [
        html.Div(id=CAPTION, className="summary"),
        html.Div(id=LEGEND, className="legend pw-legend"),
        dcc.Loading(html.Div(dcc.Graph(id=GRAPH, config={**GRAPH_CONFIG, "displayModeBar": False},
                                       clear_on_unhover=False), className="pw-graph-box"),
                    delay_show=common.LOADING_DELAY_MS, parent_className="pw-graph-scroll"),
    ], [], "pw-graph-panel")


def register(app: Dash, session: Session) -> None:
    controls = [Input(PAIR, "value"), Input(ATTACK, "value"), Input(STRENGTH, "value"), Input(MODE, "value"),
                Input(TOP, "value"), Input(FILTER, "value"), Input(COMPARE, "value"), Input(VS, "value"),
                Input(PINNED, "data")]
    app.callback(Output(GRAPH, "figure"), Output(CAPTION, "children"), Output(LEGEND, "children"),
                 Output(SETS, "children"), Output(PINS, "children"), Output(VS_BOX, "style"), *controls)(
        lambda *args: draw_view(session, *args))
    app.callback(Output(PINNED, "data"), Input(GRAPH, "clickData"), State(PINNED, "data"),
                 prevent_initial_call=True)(lambda click, pinned: toggle_pin(session, click, pinned))
    app.callback(Output(PINNED, "data", allow_duplicate=True), Input(CLEAR_PINS, "n_clicks"),
                 prevent_initial_call=True)(lambda _n: [])
    app.callback(Output(PAIR, "options"), Input(ATTACK, "value"), State(PAIR, "value"), prevent_initial_call=True)(
        lambda attack, current: refresh_pairs(session, attack, current))
