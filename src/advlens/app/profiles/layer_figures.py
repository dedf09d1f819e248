"""The Layer View's figures (paper 002 §4.4, Figs. 6, 7, 9; spec-002 §2.3) as Plotly JSON dicts (no Dash).

Signed data (a difference, a layer with negative outputs) uses RdBu centred at 0 over ±max|v| with red
negative and blue positive (:data:`advlens.profiles.SIGNED_COLORSCALE`, G-16): with the difference taken
as adversarial − benign, blue is stronger in the adversarial. Non-negative data uses a sequential scale.
Every heatmap cell and map pixel carries its unit in ``customdata``, so a click opens that unit.
"""

from __future__ import annotations

import numpy as np

from advlens.analysis.profiles import LayerView, UnitDetail
from advlens.app.figures import figure
from advlens.profiles import SIGNED_COLORSCALE, symmetric_range

SEQUENTIAL = "Viridis"
PAIR_COLORS = {"benign": "#4d4d4d", "adversarial": "#d62728"}
MATCH_COLOR = "#7b3294"


def _scale(values: np.ndarray, signed: bool) -> dict:
    if signed:
        low, high = symmetric_range(values)
        return {"colorscale": SIGNED_COLORSCALE, "zmin": low, "zmax": high}
    finite = values[np.isfinite(values)]
    return {"colorscale": SEQUENTIAL, "zmin": float(finite.min()) if finite.size else 0.0,
            "zmax": float(finite.max()) if finite.size and finite.max() > finite.min() else 1.0}


def _nan_list(array: np.ndarray) -> list:
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in array]


def unit_grid_figure(view: LayerView) -> dict:
    """The unit-scalar heatmap: units on a ceil(√C)² grid in unit order, row 0 on top (Fig. 6)."""
    side = view.grid.shape[0]
    units = np.arange(side * side).reshape(side, side)
    custom = [[int(u) if u < len(view.values) else -1 for u in row] for row in units]
    what = "adversarial − benign" if view.reduction == "difference" else view.reduction
    scalar = {"max": "unit maximum", "abs_sum": "Σ|·|"}[view.unit_scalar]
    trace = {"type": "heatmap", "z": _nan_list(view.grid), "customdata": custom, "xgap": 1, "ygap": 1,
             **_scale(view.values, view.signed), "colorbar": {"thickness": 10, "len": 0.9},
             "hovertemplate": f"unit %{{customdata}}: %{{z:.4g}}<br>{scalar}, {what}<extra>click: unit detail</extra>"}
    size = max(180, min(300, 22 * side + 60))
    return figure([trace], {
        "height": size, "margin": {"l": 8, "r": 8, "t": 8, "b": 8}, "plot_bgcolor": "#ffffff",
        "xaxis": {"visible": False, "constrain": "domain"},
        "yaxis": {"visible": False, "autorange": "reversed", "scaleanchor": "x"}})


def _mosaic(maps: np.ndarray, units: np.ndarray, per_row: int) -> tuple[np.ndarray, np.ndarray]:
    """Maps side by side in rows of ``per_row`` with one blank pixel between. Shape: maps (k, H, W)."""
    k, h, w = maps.shape
    rows = (k + per_row - 1) // per_row
    image = np.full((rows * (h + 1) - 1, per_row * (w + 1) - 1), np.nan)
    owner = np.full(image.shape, -1, dtype=np.int64)
    for index in range(k):
        r, c = divmod(index, per_row)
        image[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = maps[index]
        owner[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = int(units[index])
    return image, owner


def maps_figure(view: LayerView) -> dict:
    """Activation maps of the shown units. For the pair: rows benign | adversarial (one sequential scale)
    and adversarial − benign (RdBu), as Fig. 6's columns; for another set: the reduced maps."""
    if view.maps is None:
        return {}
    count = len(view.units)
    per_row = min(count, 10)
    panels = []
    if view.image_set == "pair" and view.reduction == "difference":
        shared = np.concatenate([view.benign_maps.reshape(-1), view.adversarial_maps.reshape(-1)])
        signed = bool(shared.min() < 0)
        panels = [("benign", view.benign_maps, signed, shared), ("adversarial", view.adversarial_maps, signed, shared),
                  ("adversarial − benign", view.maps, True, view.maps.reshape(-1))]
    else:
        panels = [(view.reduction, view.maps, view.signed, view.maps.reshape(-1))]
    gap = 0.04
    height = (1 - gap * (len(panels) - 1)) / len(panels)
    data, layout_axes, annotations = [], {}, []
    for index, (title, maps, signed, scale_values) in enumerate(panels):
        image, owner = _mosaic(maps, view.units, per_row)
        suffix = "" if index == 0 else str(index + 1)
        top = 1 - index * (height + gap)
        data.append({"type": "heatmap", "z": _nan_list(image), "customdata": owner.tolist(),
                     "xaxis": f"x{suffix}", "yaxis": f"y{suffix}", **_scale(scale_values, signed),
                     "showscale": index != 0, "colorbar": {"thickness": 8, "len": height, "y": top - height / 2,
                                                          "yanchor": "middle"},
                     "hovertemplate": f"{title} · unit %{{customdata}}: %{{z:.3g}}<extra>click: unit detail</extra>"})
        layout_axes[f"xaxis{suffix}"] = {"visible": False, "anchor": f"y{suffix}", "constrain": "domain"}
        layout_axes[f"yaxis{suffix}"] = {"visible": False, "autorange": "reversed", "domain": [max(0.0, top - height), min(1.0, top)],
                                         "scaleanchor": f"x{suffix}", "anchor": f"x{suffix}"}
        annotations.append({"text": title, "xref": "paper", "yref": "paper", "x": 0, "y": top, "xanchor": "left",
                            "yanchor": "bottom", "showarrow": False, "font": {"size": 11}})
    rows = (count + per_row - 1) // per_row
    h, w = view.maps.shape[1:]
    per_panel = max(70, min(240, rows * (h + 1) * 620 / max(per_row * (w + 1), 1)))
    return figure(data, {"height": int(per_panel * len(panels) + 30 * len(panels)), "margin": {"l": 4, "r": 40,
                                                                                          "t": 18, "b": 4},
                         "plot_bgcolor": "#ffffff", "annotations": annotations, **layout_axes})


def _bars(units: np.ndarray, series: list[tuple[str, np.ndarray, str]], height: int, ytitle: str,
          extra: dict | None = None) -> dict:
    labels = [str(int(u)) for u in units]
    data = [{"type": "bar", "x": labels, "y": [float(v) for v in values], "name": name, "marker": {"color": color},
             "customdata": [int(u) for u in units],
             "hovertemplate": f"unit %{{customdata}} · {name}: %{{y:.4g}}<extra></extra>"}
            for name, values, color in series]
    layout = {"height": height, "margin": {"l": 48, "r": 8, "t": 8, "b": 36}, "barmode": "group",
              "plot_bgcolor": "#ffffff", "legend": {"orientation": "h", "y": 1.12, "font": {"size": 10}},
              "xaxis": {"type": "category", "title": {"text": "unit", "font": {"size": 11}}},
              "yaxis": {"title": {"text": ytitle, "font": {"size": 11}}, "gridcolor": "#eee", "zeroline": True}}
    layout.update(extra or {})
    return figure(data, layout)


def strength_figure(view: LayerView) -> dict:
    """Fig. 9b: Σ|·| of each image on the pair's top-20 diverging units (the ranking of Fig. 9a)."""
    s = view.strength
    return _bars(s.units, [("benign", s.a, PAIR_COLORS["benign"]), ("adversarial", s.b, PAIR_COLORS["adversarial"])],
                 210, "Σ|·| output")


def class_change_figure(view: LayerView, names: tuple[str, str]) -> dict:
    """Fig. 7: per unit, the pair's change next to the change between the two classes' background means;
    matching units (same sign, both above their 75th percentile, G-11b) are outlined."""
    change = view.class_change
    units = np.arange(len(change.pair))
    line = [3 if m else 0 for m in change.matching]
    data = [
        {"type": "bar", "x": units.tolist(), "y": change.pair.tolist(), "name": "pair: adversarial − benign",
         "marker": {"color": PAIR_COLORS["adversarial"], "line": {"color": MATCH_COLOR, "width": line}},
         "hovertemplate": "unit %{x}: pair change %{y:.4g}<extra></extra>"},
        {"type": "bar", "x": units.tolist(), "y": change.between_classes.tolist(),
         "name": f"class means: {names[1]} − {names[0]}",
         "marker": {"color": "#7f7f7f", "line": {"color": MATCH_COLOR, "width": line}},
         "hovertemplate": "unit %{x}: class change %{y:.4g}<extra></extra>"},
    ]
    return figure(data, {"height": 210, "margin": {"l": 48, "r": 8, "t": 8, "b": 36}, "barmode": "group",
                         "plot_bgcolor": "#ffffff", "legend": {"orientation": "h", "y": 1.15, "font": {"size": 10}},
                         "xaxis": {"title": {"text": "unit (outlined: matching)", "font": {"size": 11}}},
                         "yaxis": {"title": {"text": "change", "font": {"size": 11}}, "gridcolor": "#eee"}})


def unit_maps_figure(detail: UnitDetail) -> dict:
    """The unit's benign and adversarial maps (one scale) and their difference (RdBu), side by side."""
    if detail.benign_map is None:
        return {}
    both = np.concatenate([detail.benign_map.reshape(-1), detail.adversarial_map.reshape(-1)])
    diff = detail.adversarial_map - detail.benign_map
    signed = bool(both.min() < 0)
    data = []
    for index, (title, values, scale) in enumerate((("benign", detail.benign_map, _scale(both, signed)),
                                                    ("adversarial", detail.adversarial_map, _scale(both, signed)),
                                                    ("difference", diff, _scale(diff.reshape(-1), True)))):
        suffix = "" if index == 0 else str(index + 1)
        data.append({"type": "heatmap", "z": _nan_list(values), "xaxis": f"x{suffix}", "yaxis": f"y{suffix}",
                     **scale, "showscale": index == 2, "colorbar": {"thickness": 8},
                     "hovertemplate": f"{title}: %{{z:.3g}}<extra></extra>"})
    layout = {"height": 170, "margin": {"l": 4, "r": 30, "t": 20, "b": 4}, "plot_bgcolor": "#ffffff",
              "annotations": []}
    for index, title in enumerate(("benign", "adversarial", "difference")):
        suffix = "" if index == 0 else str(index + 1)
        left = index / 3
        layout[f"xaxis{suffix}"] = {"visible": False, "domain": [left + 0.01, left + 0.31], "anchor": f"y{suffix}"}
        layout[f"yaxis{suffix}"] = {"visible": False, "autorange": "reversed", "scaleanchor": f"x{suffix}",
                                    "anchor": f"x{suffix}"}
        layout["annotations"].append({"text": title, "xref": "paper", "yref": "paper", "x": left + 0.16, "y": 1,
                                      "yanchor": "bottom", "showarrow": False, "font": {"size": 11}})
    return figure(data, layout)


__all__ = ["unit_grid_figure", "maps_figure", "strength_figure", "class_change_figure", "unit_maps_figure"]
