"""Per-pair faithfulness badges of the Neuron Vulnerability View (issue 13, item 4): beside each measure's name in
the view's "sort by" menu, the insertion AUC of that measure's ranking on the selected pair — the share of the
attack's effect on the adversarial class that the measure's top neurons carry when set to their adversarial values
in the benign pass, averaged over k (:meth:`advlens.analysis.Session.measure_faithfulness`) — so the user sees which
order to trust for this pair; the highest is marked.

The AUCs take forward passes (and, for the IoU measures, the vulnerability maps), so they never hold up the view: a
quick callback shows "AUC …" and asks for them (:data:`~advlens.app.neurons.state.BADGE_REQUEST`), a second one
computes them (the session and the store keep them) and fills the badges in — once the Receptive Field View has
drawn the pair's bMap and aMap (:data:`~advlens.app.neurons.state.MAPS_DRAWN`), so that their seconds of forward
passes do not compete with the maps' (and the IoU rankings reuse the maps' masks).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from dash import Dash, Input, Output
from dash.exceptions import PreventUpdate

from advlens import measures
from advlens.analysis import NEURON_MEASURES, Session
from advlens.app import validate
from advlens.app.common import guarded
from advlens.app.neurons.neuron_view import MEASURE, MEASURE_LABELS
from advlens.app.neurons.state import BADGE_REQUEST, BAND_KIND, MAPS_DRAWN, RF_QUANTILE, TOP_PERCENT, VIEWS_PAIR

DEFAULT_TOP_PERCENT = 20.0
EXPLAINED = ("insertion AUC on pair {pair}: the share of the attack's effect on the adversarial class that this "
             "ranking's top neurons carry when they alone take their adversarial values, averaged over k "
             "(1: the first neuron carries all of it)")


def measure_options(aucs: Mapping[str, float] | None = None, pending: bool = False, pair: int | None = None,
                    error: str | None = None) -> list[dict]:
    """The "sort by" menu: each measure's name with its badge ("AUC 0.71", "AUC …" while computing, "AUC n/a"
    where the pair has no such ranking or the computation failed), the highest AUC marked "best"."""
    finite = {m: v for m, v in (aucs or {}).items() if isinstance(v, float) and math.isfinite(v)}
    best = max(finite, key=finite.get) if finite else None
    options = []
    for measure, label in MEASURE_LABELS.items():
        option = {"label": label, "value": measure}
        if error is not None:
            option["label"] = f"{label} · AUC n/a"
            option["title"] = f"no faithfulness badge: {error}"
        elif pending:
            option["label"] = f"{label} · AUC …"
            option["title"] = f"computing the insertion AUC of each measure on pair {pair}"
        elif aucs is not None:
            value = finite.get(measure)
            badge = "n/a" if value is None else f"{value:.2f}" + (" (best)" if measure == best else "")
            option["label"] = f"{label} · AUC {badge}"
            option["title"] = EXPLAINED.format(pair=pair)
        options.append(option)
    return options


def ranking_options(session: Session, quantile, top_percent, kind) -> dict:
    """The view's ranking options (checked), only those that differ from the defaults (so the stored AUCs of the
    default view are shared with every other caller)."""
    quantile = validate.rf_quantile(session, quantile)
    top_percent = validate.number(DEFAULT_TOP_PERCENT if top_percent is None else top_percent, "top p%", 1, 100)
    kind = session.band_kind if kind is None else validate.choice(kind, measures.BAND_KINDS, "band kind")
    options: dict = {}
    if quantile is not None:
        options["quantile"] = quantile
    if top_percent != DEFAULT_TOP_PERCENT:
        options["top_percent"] = top_percent
    if kind != session.band_kind:
        options["kind"] = kind
    return options


@guarded(lambda text: (measure_options(error=text), None))
def request(session: Session, pair, quantile, top_percent, kind) -> tuple[list[dict], dict | None]:
    """Pending badges and the request for the selected pair and the view's ranking options (none without a pair)."""
    pair = validate.pair_id(session, pair)
    if pair is None:
        return measure_options(), None
    return (measure_options(pending=True, pair=pair),
            {"pair": pair, "options": ranking_options(session, quantile, top_percent, kind)})


@guarded(lambda text: measure_options(error=text))
def compute(session: Session, record) -> list[dict]:
    """The badges of a request: each measure's insertion AUC on the pair (computed once, then read back)."""
    if record is None:
        raise PreventUpdate
    if not isinstance(record, Mapping) or not isinstance(record.get("options"), Mapping):
        raise validate.InvalidSelection(f"badge request {str(record)[:80]!r} is not {{'pair', 'options'}}")
    pair = validate.pair_id(session, record.get("pair"))
    given = record["options"]
    options = ranking_options(session, given.get("quantile"), given.get("top_percent"), given.get("kind"))
    if pair is None:
        raise PreventUpdate
    aucs = session.measure_faithfulness(pair, NEURON_MEASURES, mode="insertion", **options)
    return measure_options(aucs, pair=pair)


def compute_after_maps(session: Session, record, maps_drawn) -> list[dict]:
    """:func:`compute`, once the maps of the request's pair are drawn (before: nothing to update yet)."""
    if not isinstance(record, Mapping) or maps_drawn is None or record.get("pair") != maps_drawn:
        raise PreventUpdate
    return compute(session, record)


def register(app: Dash, session: Session) -> None:
    app.callback(Output(MEASURE, "options"), Output(BADGE_REQUEST, "data"), Input(VIEWS_PAIR, "data"),
                 Input(RF_QUANTILE, "value"), Input(TOP_PERCENT, "value"), Input(BAND_KIND, "value"))(
        lambda pair, quantile, top_percent, kind: request(session, pair, quantile, top_percent, kind))
    app.callback(Output(MEASURE, "options", allow_duplicate=True), Input(BADGE_REQUEST, "data"),
                 Input(MAPS_DRAWN, "data"), prevent_initial_call=True)(
        lambda record, maps_drawn: compute_after_maps(session, record, maps_drawn))

