"""Every neuron ranking checked by intervention (issue 13): the rankings of a store's pairs at their own
layers, their patch curves and the per-pair insertion AUC the Neuron Vulnerability View shows as a badge.

:class:`FaithfulnessAnalysis` is mixed into :class:`advlens.analysis.Session` (it calls paper 001's
:meth:`~advlens.analysis.neurons.NeuronAnalysis.neuron_ranking`, so use it through a Session)::

    session.measure_faithfulness(7)                       # {"band_gap": 0.41, "iou_bmap": 0.12, …}
    session.faithfulness_rankings([7, 8], "divergence")   # Rankings(measure, layer, orders (2, K), valid)
    session.patch_curve_of_pair(7, "layer4", "substitution", mode="restoration")

The rankings (:data:`RANKING_SOURCES`), each at its own layer:

* paper 001's four (:data:`~advlens.analysis.neurons.NEURON_MEASURES`) at the analysed layer;
* ``divergence``: paper 002's divergence ranking ``Σ_hw |a_adv − a_benign|`` (default: the analysed layer);
* ``excitation``: Bluff's excitation (paper 004) of the pair's class pair (true → adversarial class) in the
  store's strength sweep, ``importance[attacked(s)] − importance[original]`` of every channel (the quantity
  the pathway graph shows for its drawn nodes), at the sweep strength nearest the store's attack ε
  (default: the analysed layer when the sweep covers it, else the sweep's deepest layer);
* ``datapath``: AEVis' gate values (paper 003) of the adversarial image's continuous datapath at a gate point
  (the channels the adversarial prediction needs most first; default: the analysed layer);
* ``activation_difference``: the baseline ``max_hw |a_adv − a_benign|``.

A measure's AUC is kept in ``store.derived("faithfulness")`` (one small file per pair, measure, mode, grid
and ranking options), so a badge costs its forward passes once per store.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from advlens.analysis.core import SelectionError, SessionCore
from advlens.analysis.neurons import NEURON_MEASURES
from advlens.errors import ConfigError, StoreError
from advlens.faithfulness.what_if import PairEdit, edit_pair, record_pair
from advlens.faithfulness import (MODES, PatchCurve, default_ks, difference_ranking, order_by_score, patch_auc,
                                  patch_curve)

logger = logging.getLogger(__name__)

KIND = "faithfulness"
VERSION = 1
"""Bumped when a stored AUC's computation changes (old results are then computed again)."""

DEPENDS_ON = ("attack", "activations", "statistics")
RANKING_SOURCES = (*NEURON_MEASURES, "divergence", "excitation", "datapath", "activation_difference")
"""Every ranking :meth:`FaithfulnessAnalysis.faithfulness_rankings` can give."""

NEURON_OPTIONS = ("top_percent", "quantile", "level", "k", "stride", "kind")
"""Options of :meth:`~advlens.analysis.neurons.NeuronAnalysis.neuron_ranking` passed through."""


@dataclass(frozen=True)
class Rankings:
    """Channel orders (best first) of pairs at one layer.

    Attributes:
        valid: whether the pair has this ranking (``excitation`` needs attacked images of the pair's class
            pair in the sweep; an invalid row holds the identity order and must be left out).

    Shape: pairs (P,) int64; orders (P, K) int64; valid (P,) bool.
    """

    measure: str
    layer: str
    pairs: np.ndarray
    orders: np.ndarray
    valid: np.ndarray


def _check_measure(measure: Any) -> str:
    if not isinstance(measure, str) or measure not in RANKING_SOURCES:
        raise SelectionError(f"measure {str(measure)[:60]!r} is not a ranking; use one of {', '.join(RANKING_SOURCES)}")
    return measure


class FaithfulnessAnalysis(SessionCore):
    """The faithfulness part of a :class:`~advlens.analysis.Session`."""

    # ------------------------------------------------------------------ rankings
    def _layer(self, layer: str | None) -> str:
        return self.model.graph.resolve(layer if layer is not None else self.model.analysed_layer_name)

    def _layer_maps(self, pairs: np.ndarray, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``layer``'s output on the pairs' benign and adversarial images. Shape: two (P, K, ...) on the CPU."""
        benign, adversarial = self.pair_images(pairs)
        maps = self.model.capture(torch.from_numpy(np.concatenate([benign, adversarial])), layer)[layer]
        return maps[:len(pairs)], maps[len(pairs):]

    def faithfulness_rankings(self, pairs: Sequence[int] | np.ndarray, measure: str, layer: str | None = None,
                              **options: Any) -> Rankings:
        """The channel order of each pair by ``measure`` (one of :data:`RANKING_SOURCES`) at its layer.

        Args:
            pairs: pair ids.
            layer: the layer of ``divergence``, ``excitation``, ``datapath`` and ``activation_difference``
                (paper 001's measures always rank the analysed layer). Default: see the module docstring.
            options: paper 001's ranking options (:data:`NEURON_OPTIONS`); ``datapath`` takes ``steps``
                (default 200) and ``seed``.

        Raises:
            SelectionError: an unknown measure, a pair id out of range, or a layer the sweep does not cover.
            StoreError: ``excitation`` on a store without the ``sweep`` stage (the message names the command).
        """
        measure, ids = _check_measure(measure), self.check_pairs(pairs)
        if measure in NEURON_MEASURES:
            if layer is not None and self._layer(layer) != self._layer(None):
                raise SelectionError(f"{measure} ranks the analysed layer {self.model.analysed_layer_name!r}, "
                                     f"not {layer!r}")
            unknown = set(options) - set(NEURON_OPTIONS)
            if unknown:
                raise ConfigError(f"unknown options {sorted(unknown)} for {measure}; use {', '.join(NEURON_OPTIONS)}")
            orders = np.stack([self.neuron_ranking(int(p), measure, **options)[0] for p in ids]) if len(ids) else \
                np.zeros((0, self.num_neurons), np.int64)
            return Rankings(measure, self._layer(None), ids, orders.astype(np.int64), np.ones(len(ids), bool))
        if measure == "excitation":
            return self._excitation_rankings(ids, layer)
        name = self._layer(layer)
        if measure == "datapath":
            return self._datapath_rankings(ids, name, **options)
        benign, adversarial = self._layer_maps(ids, name)
        if measure == "divergence":  # paper 002: Σ_hw |a − b| (the spatial mean orders the same way)
            orders = difference_ranking(benign, adversarial, "mean")
        else:
            orders = difference_ranking(benign, adversarial, "max")
        return Rankings(measure, name, ids, orders, np.ones(len(ids), bool))

    def _excitation_rankings(self, ids: np.ndarray, layer: str | None) -> Rankings:
        from advlens.analysis.pathways_build import layer_tables
        from advlens.analysis.pathways_sweep import STAGE, SweepView

        if not self.store.has_stage(STAGE):
            raise StoreError(f"the store at {self.store.root} has no strength sweep, which Bluff's excitation "
                             f"needs; add it with `{self.store.add_stages_command(STAGE)}`")
        sweep = self._cached(("faith-sweep",), lambda: SweepView(self.store))
        if layer is None:
            analysed = self.model.analysed_layer_name
            layer = analysed if analysed in sweep.layers else sweep.layers[-1]
        if layer not in sweep.layers:
            raise SelectionError(f"layer {str(layer)[:60]!r} is not a pathway layer; the sweep covers "
                                 f"{', '.join(sweep.layers)}")
        index = sweep.layers.index(layer)
        attack = sweep.attack_index(self.store.config["attack"]["name"]) \
            if self.store.config["attack"]["name"] in sweep.attacks else 0
        strengths = np.argsort(np.abs(sweep.eps - float(self.store.config["attack"]["eps"])), kind="stable")
        channels = int(sweep.channels[index])
        orders = np.tile(np.arange(channels, dtype=np.int64), (len(ids), 1))
        valid = np.zeros(len(ids), bool)
        labels, targets = self.table["label"][ids], self.table["adv_pred"][ids]
        for row, (original, target) in enumerate(zip(labels.tolist(), targets.tolist())):
            table = self._cached(("faith-tables", original, target),
                                 lambda o=original, t=target: layer_tables(sweep, o, t))[index]
            for s in strengths:  # the nearest strength with attacked images of this class pair
                attacked = table.attacked[attack, s]
                if np.all(np.isfinite(attacked)) and np.all(np.isfinite(table.benign[0])):
                    orders[row] = order_by_score(attacked - table.benign[0])
                    valid[row] = True
                    break
        return Rankings("excitation", layer, ids, orders, valid)

    def _datapath_rankings(self, ids: np.ndarray, layer: str, steps: int = 200, seed: int = 0) -> Rankings:
        from advlens.datapaths import default_gate_layers, extract_datapaths

        gates = default_gate_layers(self.model)
        if layer not in gates:
            raise SelectionError(f"layer {layer!r} is not a gate point of the datapaths; use one of {', '.join(gates)}")
        _, adversarial = self.pair_images(ids)
        if not len(ids):
            return Rankings("datapath", layer, ids, np.zeros((0, self.model.graph[layer].channels), np.int64),
                            np.zeros(0, bool))
        paths = extract_datapaths(self.model, torch.from_numpy(adversarial), gates, steps=steps, seed=seed)
        return Rankings("datapath", layer, ids, order_by_score(paths.layer(layer).numpy()), np.ones(len(ids), bool))

    # ------------------------------------------------------------------ curves
    def patch_curve_of_pair(self, pair: int, layer: str | None, ranking: str | Sequence[int] | np.ndarray,
                            mode: str = "insertion", ks: Sequence[int] | None = None) -> PatchCurve:
        """The patch curve of one pair (:func:`advlens.faithfulness.patch_curve`).

        Args:
            layer: the patched layer (None: the analysed layer, or the measure's default layer).
            ranking: a channel order (every channel of ``layer`` once, best first), or a measure of
                :data:`RANKING_SOURCES` whose order of this pair is used.
            ks: default :func:`~advlens.faithfulness.default_ks` of the layer.
        """
        pair = self.check_pair(pair)
        if isinstance(ranking, str):
            found = self.faithfulness_rankings([pair], ranking, layer)
            if not found.valid[0]:
                raise StoreError(f"the sweep has no attacked images of this pair's class pair, so it has no "
                                 f"{ranking} ranking")
            layer, order = found.layer, found.orders[0]
        else:
            layer, order = self._layer(layer), np.asarray(ranking)
        steps = default_ks(self.model.graph[layer].channels) if ks is None else np.asarray(ks)
        key = ("faith-curve", pair, layer, order.tobytes(), mode, np.asarray(steps).tobytes())

        def compute() -> PatchCurve:
            benign, adversarial = self.pair_images([pair])
            return patch_curve(self.model, benign, adversarial, layer, order, mode, steps)
        return self._cached(key, compute)

    # ------------------------------------------------------------------ per-pair badge
    def measure_faithfulness(self, pair: int, measures: Sequence[str] | None = None, mode: str = "insertion",
                             ks: Sequence[int] | None = None, **options: Any) -> dict[str, float]:
        """Per measure, the AUC of its ranking's patch curve on this pair (insertion by default: the share of
        the attack's effect on the adversarial class its top channels carry, averaged over k; see
        :mod:`advlens.faithfulness.auc`). NaN where the pair has no such ranking (``excitation``).

        Computed on demand, cached in the session and kept in ``store.derived("faithfulness")``.

        Args:
            measures: default paper 001's four (:data:`~advlens.analysis.neurons.NEURON_MEASURES`).
            ks: the k grid (default :func:`~advlens.faithfulness.default_ks` of each measure's layer).
            options: paper 001's ranking options (:data:`NEURON_OPTIONS`; JSON values), as the view uses them.
        """
        pair = self.check_pair(pair)
        names = list(NEURON_MEASURES if measures is None else dict.fromkeys(_check_measure(m) for m in measures))
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        unknown = set(options) - set(NEURON_OPTIONS)
        if unknown:
            raise ConfigError(f"unknown ranking options {sorted(unknown)}; use {', '.join(NEURON_OPTIONS)}")
        grid = None if ks is None else [int(k) for k in ks]
        session_key = ("faith-auc", pair, tuple(names), mode, json.dumps([grid, options], sort_keys=True))
        return self._cached(session_key, lambda: self._stored_or_computed_aucs(pair, names, mode, grid, options))

    def _stored_or_computed_aucs(self, pair: int, names: list[str], mode: str, grid: list[int] | None,
                                 options: dict) -> dict[str, float]:
        derived = self.store.derived(KIND)
        result: dict[str, float] = {}
        missing: list[tuple[str, dict]] = []
        for name in names:
            key = {"version": VERSION, "pair": pair, "measure": name, "mode": mode, "ks": grid,
                   "options": options if name in NEURON_MEASURES else {}}
            found = derived.get(key, depends_on=list(DEPENDS_ON))
            if found is None:
                missing.append((name, key))
            else:
                result[name] = float(found.arrays["auc"])
        for name, key, auc in self._compute_aucs(pair, missing, mode, grid, options):
            derived.put(key, {"auc": np.float64(auc)}, {"measure": name}, depends_on=list(DEPENDS_ON))
            result[name] = auc
        return {name: result[name] for name in names}

    def _compute_aucs(self, pair: int, missing: list[tuple[str, dict]], mode: str, grid: list[int] | None,
                      options: dict) -> list[tuple[str, dict, float]]:
        """AUCs of the missing measures: one batched patch curve per layer."""
        by_layer: dict[str, list[tuple[str, dict, np.ndarray | None]]] = {}
        for name, key in missing:
            found = self.faithfulness_rankings([pair], name, **(options if name in NEURON_MEASURES else {}))
            by_layer.setdefault(found.layer, []).append((name, key, found.orders[0] if found.valid[0] else None))
        out = []
        benign, adversarial = self.pair_images([pair])
        for layer, entries in by_layer.items():
            usable = [(name, key, order) for name, key, order in entries if order is not None]
            out += [(name, key, float("nan")) for name, key, order in entries if order is None]
            if not usable:
                continue
            steps = default_ks(self.model.graph[layer].channels) if grid is None else grid
            count = len(usable)
            curve = patch_curve(self.model, np.repeat(benign, count, 0), np.repeat(adversarial, count, 0), layer,
                                np.stack([order for _, _, order in usable]), mode, steps)
            out += [(name, key, float(auc)) for (name, key, _), auc in zip(usable, patch_auc(curve))]
        return out

    def edit_pair(self, pair: int, channels: Sequence[int] | np.ndarray, mode: str = "restore",
                  layer: str | None = None) -> PairEdit:
        """A what-if edit of one pair (``advlens.faithfulness.what_if.edit_pair``): ``channels`` of ``layer``
        (default: the analysed layer) restored to benign (``mode="restore"``, in the adversarial pass), set to
        adversarial (``"attack"``, in the benign pass) or zeroed (``"zero_adversarial"`` / ``"zero_benign"``);
        the pair's unedited pass and the layer's maps are kept in the session's cache, so the next edit of the
        pair costs one forward.

        Raises:
            SelectionError: a pair id outside the store. ConfigError / ModelError: bad channels, mode or layer.
        """
        pair = self.check_pair(pair)
        model = self.model
        name = self._layer(layer)
        benign, adversarial = self.pair_images([pair])
        record = self.cache.get_or_compute(("what-if-record", pair, name),
                                           lambda: record_pair(model, benign, adversarial, name))
        return edit_pair(model, benign, adversarial, name, np.asarray(channels, dtype=np.int64), mode, record=record)
