"""The Layer View of the profiles analysis (paper 002 §4.4; spec-002 §1.7, §2.3): one layer reduced over a
set of images, a unit's detail and connections, and the export."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from advlens.analysis.core import SelectionError, check_id, check_ids
from advlens.analysis.profiles_base import ProfilesBase
from advlens.analysis.profiles_data import LayerView, UnitDetail, parse_set
from advlens.errors import StoreError
from advlens.profiles import (
    REDUCTIONS,
    UNIT_SCALARS,
    class_change,
    diverging_strength,
    divergence_ranking,
    layer_export,
    post_activation,
    reduce,
    resolve_unit_scalar,
    scalar_difference,
    strongest_connections,
    top_units,
    unit_grid,
    unit_scalars,
)

IMAGES = ("benign", "adversarial")
EXPORT_FORMATS = ("csv", "npz")


class ProfilesLayers(ProfilesBase):
    """The Layer View's data for a pair: reductions over a set, unit scalars, maps, ranking, charts, export."""

    def _set_outputs(self, pair: int, layer: str, image_set: str, group: Sequence[int] | None) -> np.ndarray:
        """The outputs of the images of a set: the pair ([benign, adversarial]), a background class
        (images predicted K) or a brushed group of background images. Shape: (N, C, H, W) or (N, D)."""
        try:
            kind, label = parse_set(image_set, self.num_classes)
        except ValueError as exc:
            raise SelectionError(str(exc)) from None
        if kind == "pair":
            benign, adversarial = self.pair_outputs(pair, [layer])
            return np.stack([benign[0], adversarial[0]])
        activations = self.background_activations([layer])[0]
        if kind == "class":
            rows = np.flatnonzero(self.profiles_background().preds == label)
            if not len(rows):
                raise SelectionError(f"no background image is predicted {self.class_names[label]}: pick another class")
            return activations[rows]
        if group is None or len(group) == 0:
            raise SelectionError("the brushed group is empty: brush an interval of an axis of the Flow View first")
        return activations[self._check_group(group)]

    def _check_group(self, group: Sequence[int]) -> np.ndarray:
        return check_ids(group, self.profiles_background().size, "background image")

    def layer_view(self, pair: int, layer: str, reduction: str = "difference", image_set: str = "pair",
                   unit_scalar: str = "auto", image: str = "adversarial",
                   group: Sequence[int] | None = None) -> LayerView:
        """One layer reduced over a set of images (paper 002 §4.4; spec-002 §1.7, §2.3).

        Args:
            pair: the foreground pair.
            layer: any layer of the model.
            reduction: ``mean``/``max`` over the set, ``difference`` (the pair's adversarial − benign:
                blue = stronger in the adversarial, G-16) or ``direct`` (the pair's ``image``).
            image_set: ``pair``, ``class:K`` (background images predicted K) or ``group`` (``group``'s
                background images, e.g. from :meth:`brushed_group`).
            unit_scalar: ``max``, ``abs_sum`` or ``auto`` (Σ|·| iff the data has a negative value, G-14).
            image: the pair's image ``direct`` shows.
            group: background image indices of the ``group`` set.

        Raises:
            SelectionError: a bad id or choice, ``difference``/``direct`` on a set other than the pair,
                an empty set.
        """
        pair = self.check_pair(pair)
        layer = self.check_profile_layer(layer)
        reduction = self._choice(reduction, REDUCTIONS, "reduction")
        unit_scalar = self._choice(unit_scalar, UNIT_SCALARS, "unit scalar")
        image = self._choice(image, IMAGES, "image")
        if reduction in ("difference", "direct") and image_set != "pair":
            raise SelectionError(f"the {reduction} reduction compares the pair's images: choose the pair set "
                                 "(mean and max work on any set)")
        key = ("profiles-layer-view", pair, layer, reduction, image_set, unit_scalar, image,
               None if group is None else tuple(int(g) for g in group))
        return self._cached(key, lambda: self._layer_view(pair, layer, reduction, image_set, unit_scalar, image,
                                                          group))

    def _layer_view(self, pair: int, layer: str, reduction: str, image_set: str, unit_scalar: str, image: str,
                    group: Sequence[int] | None) -> LayerView:
        outputs = self._set_outputs(pair, layer, image_set, group)
        benign_out, adversarial_out = self.pair_outputs(pair, [layer])
        benign, adversarial = benign_out[0], adversarial_out[0]
        if reduction == "difference":
            reduced = reduce(outputs, "difference", 1, 0)
            mode = resolve_unit_scalar(unit_scalar, benign, adversarial)
            values = scalar_difference(adversarial, benign, mode)
        else:
            reduced = reduce(outputs, reduction, IMAGES.index(image) if reduction == "direct" else None)
            mode = resolve_unit_scalar(unit_scalar, reduced)
            values = unit_scalars(reduced, mode)
        signed = reduction == "difference" or bool(np.min(reduced) < 0) or bool(np.min(values) < 0)
        units = top_units(np.abs(values) if signed else values)
        spatial = reduced.ndim == 3
        info = self.pair_info(pair)
        change, problem = None, None
        activations = self.background_activations([layer])[0]
        preds = self.profiles_background().preds
        groups = [activations[preds == label] for label in (info["label"], info["adv_pred"])]
        missing = [self.class_names[label] for label, g in zip((info["label"], info["adv_pred"]), groups) if not len(g)]
        if missing:
            problem = f"no background image is predicted {' or '.join(missing)}, so there is no class mean to compare"
        else:
            change = class_change(benign, adversarial, groups[0], groups[1], mode)
        return LayerView(
            pair=pair, layer=layer, reduction=reduction, image_set=image_set, set_size=int(len(outputs)),
            unit_scalar=mode, reduced=reduced, values=values, signed=signed, grid=unit_grid(values), units=units,
            maps=reduced[units] if spatial else None, benign_maps=benign[units] if spatial else None,
            adversarial_maps=adversarial[units] if spatial else None,
            ranking=divergence_ranking(adversarial, benign), strength=diverging_strength(benign, adversarial),
            class_change=change, class_change_problem=problem)

    def unit_detail(self, pair: int, layer: str, unit: int, unit_scalar: str = "auto") -> UnitDetail:
        """One unit for a pair: its maps and scalars, its top-5 in/out connections (G-17) and the feature
        visualisations of it and of the units it connects to (from the ``features`` stage, when present)."""
        pair = self.check_pair(pair)
        layer = self.check_profile_layer(layer)
        unit_scalar = self._choice(unit_scalar, UNIT_SCALARS, "unit scalar")
        graph = self.model.graph
        unit = check_id(unit, graph[layer].channels, f"layer {layer!r} unit")

        def compute() -> UnitDetail:
            benign_out, adversarial_out = self.pair_outputs(pair, [layer])
            benign, adversarial = benign_out[0], adversarial_out[0]
            mode = resolve_unit_scalar(unit_scalar, benign, adversarial)
            connections = strongest_connections(self.model, layer, unit)
            library, problem = None, None
            try:
                library = self.features
            except StoreError as exc:
                problem = str(exc)
            visualization = None
            if library is not None and library.has(layer):
                visualization = library.visualization(layer, unit)
            elif library is not None:
                problem = f"the features stage has no visualisations of {layer}"

            def side(weighted: str | None, links) -> tuple[str | None, list]:
                if weighted is None or library is None or weighted not in graph:
                    return None, [None] * len(links)
                shown = post_activation(graph, weighted)
                if not library.has(shown):
                    return None, [None] * len(links)
                return shown, [library.visualization(shown, link.channel) for link in links]

            incoming_layer, incoming = side(connections.incoming_from, connections.incoming)
            outgoing_layer, outgoing = side(connections.outgoing_to, connections.outgoing)
            spatial = benign.ndim == 3
            return UnitDetail(
                pair=pair, layer=layer, unit=unit, unit_scalar=mode,
                benign_value=float(unit_scalars(benign, mode)[unit]),
                adversarial_value=float(unit_scalars(adversarial, mode)[unit]),
                benign_map=benign[unit] if spatial else None, adversarial_map=adversarial[unit] if spatial else None,
                connections=connections, visualization=visualization, features_problem=problem,
                incoming_layer=incoming_layer, outgoing_layer=outgoing_layer, incoming_visualizations=incoming,
                outgoing_visualizations=outgoing)
        return self._cached(("profiles-unit", pair, layer, unit, unit_scalar), compute)

    def layer_export(self, pair: int, layer: str, reduction: str = "difference", image_set: str = "pair",
                     unit_scalar: str = "auto", fmt: str = "csv", image: str = "adversarial",
                     group: Sequence[int] | None = None) -> bytes:
        """A Layer View selection as CSV (the per-unit table) or NPZ (also the reduced data and the unit ×
        unit covariance over the whole background) bytes (spec-002 §1.7)."""
        fmt = self._choice(fmt, EXPORT_FORMATS, "export format")
        view = self.layer_view(pair, layer, reduction, image_set, unit_scalar, image, group)
        outputs = self._set_outputs(view.pair, view.layer, image_set, group)
        meta = {"pair": view.pair, "image_set": image_set, "set_size": view.set_size,
                "dataset_index": self.pair_info(view.pair)["dataset_index"]}
        if reduction == "direct":
            meta["image"] = image
        if reduction == "difference":
            meta["difference"] = "adversarial - benign"
        export = layer_export(view.layer, reduction, view.reduced, outputs, view.unit_scalar,
                              background=self.background_activations([view.layer])[0], meta=meta)
        return export.to_csv() if fmt == "csv" else export.to_npz()


__all__ = ["ProfilesLayers", "IMAGES", "EXPORT_FORMATS"]
