"""Activation pathways of a class pair (paper 004, Bluff; spec-004 §1–§6) over a store's strength sweep.

:class:`PathwayAnalysis` is mixed into :class:`advlens.analysis.Session`::

    session.pathway_class_pairs("pgd")                  # class pairs by how often the attack maps o → t
    graph = session.pathway_graph(0, 6, "pgd")          # PathwayGraph: nodes, groups, edges, influences
    graph.excitation()                                  # (E, M) excitation per strength
    session.pathway_neuron_detail("layer4", 12, 0, 6)   # importance vs strength, feature vis, examples

A graph's node part (importances, groups) comes from the stored maxima of the ``sweep`` stage and
costs little; its edges need forward (and, between layers not joined by one convolution, backward)
passes over at most ``max_images`` seeded images per set. The whole graph is cached in the session
and written to ``store.derived("pathway-graph")``, so the next request — also after a restart —
reads it back.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from advlens.analysis.core import SelectionError, SessionCore, check_id
from advlens.analysis.features import ChannelExamples
from advlens.analysis.pathways_build import LayerTables, build_graph, layer_tables, percentile_or_nan, select_nodes
from advlens.analysis.pathways_graph import MIN_IMAGES, PINNED, PathwayGraph
from advlens.analysis.pathways_sweep import STAGE, SweepView
from advlens.errors import ConfigError, StoreError
from advlens.pipeline.stages_pathways import TARGETED_KIND, targeted_key

logger = logging.getLogger(__name__)

KIND = "pathway-graph"
DEPENDS_ON = ("predict", STAGE)
VERSION = 1
"""Bumped when the stored graph's layout or computation changes (old results are then computed again)."""


@dataclass(frozen=True)
class ClassPairCounts:
    """How often the sweep's attack maps each original class to each other class, most often first.

    Shape:
        original, target: (P,) int64 class ids (every ordered pair of distinct classes);
        counts: (P, E) int64 sampled ``original`` images predicted ``target`` at each strength;
        total: (P,) int64 the count the order is by (all strengths, or the one asked for).
        eps: (E,) the strengths; sampled: (K,) int64 sampled images per class.
    """

    attack: str
    eps: np.ndarray
    original: np.ndarray
    target: np.ndarray
    counts: np.ndarray
    total: np.ndarray
    sampled: np.ndarray


@dataclass(frozen=True)
class SweepInfo:
    """What the store's strength sweep covers.

    Shape: eps (E,) ascending strengths (pixel scale); channels (L,) channels per layer.
    Attributes: per_class: the most images sampled per class (None when the stage did not record it).
    """

    layers: tuple[str, ...]
    channels: np.ndarray
    attacks: tuple[str, ...]
    eps: np.ndarray
    per_class: int | None


@dataclass(frozen=True)
class PathwayNeuronDetail:
    """One neuron of a pathway layer for a class pair: its importance against attack strength.

    Shape:
        eps: (E,); attacked: (E,) float64 importance for attacked(s) (NaN: no attacked image);
        attacked_count: (E,) int64; attacked_percentile: (E,) rank percentile within the layer.
    Attributes:
        visualization: (c, H, W) float32 feature visualisation, None without a ``features`` stage
            (``features_problem`` then says how to add it); examples: its top dataset examples.
    """

    layer: str
    channel: int
    original: int
    target: int
    attack: str
    eps: np.ndarray
    attacked: np.ndarray
    attacked_count: np.ndarray
    attacked_percentile: np.ndarray
    original_importance: float
    target_importance: float
    original_percentile: float
    target_percentile: float
    original_count: int
    target_count: int
    visualization: np.ndarray | None
    examples: ChannelExamples | None
    features_problem: str | None


def _positive_int(value: Any, what: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{what} must be an integer ≥ {low}, got {value!r}")
    return int(value)


class PathwayAnalysis(SessionCore):
    """Class-level activation pathways (Bluff) of the store's strength sweep."""

    # ------------------------------------------------------------------ the sweep
    def has_sweep(self) -> bool:
        """Whether the store holds the ``sweep`` stage."""
        return self.store.has_stage(STAGE)

    def sweep_command(self) -> str:
        """The ``advlens prepare`` command that adds the sweep to this store."""
        return self.store.add_stages_command(STAGE)

    def _sweep(self, original: int | None = None, target: int | None = None, targeted: bool = False) -> SweepView:
        if not targeted:
            return self._cached(("pathway-sweep",), lambda: SweepView(self.store))
        return self._cached(("pathway-sweep", "targeted", original, target),
                            lambda: SweepView(self.store, self._targeted_sample(original, target)))

    def _targeted_sample(self, original: int, target: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The stored targeted sweep of ``original → target`` (``store.derived("targeted-sweep")``)."""
        key = targeted_key(self.store, original, target)
        result = self.store.derived(TARGETED_KIND).get(key, depends_on=["predict", STAGE])
        if result is None:
            names = self.class_names
            raise StoreError(f"the store at {self.store.root} holds no targeted sweep of {names[original]} → "
                             f"{names[target]}; compute it with `advlens pathways {self.store.root} --original "
                             f"{original} --target {target} --targeted`")
        return result.arrays, {**result.attrs, "key": key}

    def sweep_info(self) -> SweepInfo:
        """The sweep's layers, attacks and strengths (:class:`StoreError` naming the command without one)."""
        sweep = self._sweep()
        per_class = sweep.attrs.get("per_class")
        return SweepInfo(layers=tuple(sweep.layers), channels=sweep.channels.copy(), attacks=tuple(sweep.attacks),
                         eps=sweep.eps.copy(), per_class=None if per_class is None else int(per_class))

    def check_attack(self, attack: Any) -> str:
        """An attack of the sweep (``pgd``, ``fgsm``), else :class:`SelectionError`."""
        attacks = self._sweep().attacks
        if not isinstance(attack, str) or attack not in attacks:
            raise SelectionError(f"attack {attack!r} is not in the sweep; use one of {', '.join(attacks)}")
        return attack

    def check_pathway_layer(self, layer: Any) -> int:
        """The position of ``layer`` among the sweep's layers, else :class:`SelectionError`."""
        layers = self._sweep().layers
        if not isinstance(layer, str) or layer not in layers:
            raise SelectionError(f"layer {str(layer)[:60]!r} is not a pathway layer; the sweep covers "
                                 f"{', '.join(layers)}")
        return layers.index(layer)

    def _check_class_pair(self, original: Any, target: Any) -> tuple[int, int]:
        original, target = self.check_class(original), self.check_class(target)
        if original == target:
            raise SelectionError(f"original and target class are both {original} ({self.class_names[original]}); "
                                 "a class pair needs two different classes")
        return original, target

    # ------------------------------------------------------------------ class pairs (the page's picker)
    def pathway_class_pairs(self, attack: str = "pgd", eps: float | None = None) -> ClassPairCounts:
        """Every ordered pair of distinct classes with how often the sweep's ``attack`` maps one to the other.

        Args:
            attack: an attack of the sweep.
            eps: order by the count at this strength (one of the sweep's); None: by the count summed over
                every strength.
        """
        attack = self.check_attack(attack)
        sweep = self._sweep()
        strength = None if eps is None else self._strength_index(sweep, eps)

        def compute() -> ClassPairCounts:
            k = self.num_classes
            pred = sweep.adv_pred[sweep.attack_index(attack)]  # (E, S)
            flat = sweep.sample_label[None, :] * k + pred
            counts = np.stack([np.bincount(row, minlength=k * k) for row in flat]).T.reshape(k, k, -1)
            original, target = np.nonzero(~np.eye(k, dtype=bool))
            per = counts[original, target]
            total = per.sum(1) if strength is None else per[:, strength]
            order = np.lexsort((target, original, -total))
            return ClassPairCounts(attack=attack, eps=sweep.eps.copy(), original=original[order].astype(np.int64),
                                   target=target[order].astype(np.int64), counts=per[order].astype(np.int64),
                                   total=total[order].astype(np.int64),
                                   sampled=np.bincount(sweep.sample_label, minlength=k).astype(np.int64))
        return self._cached(("pathway-class-pairs", attack, strength), compute)

    @staticmethod
    def _strength_index(sweep: SweepView, eps: Any) -> int:
        if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating, np.integer)):
            raise SelectionError(f"strength {eps!r} is not a number")
        hit = np.flatnonzero(np.isclose(sweep.eps, float(eps), rtol=1e-6, atol=1e-9))
        if not hit.size:
            raise SelectionError(f"strength {eps!r} is not in the sweep; its strengths are "
                                 f"{', '.join(f'{e * 255:g}/255' for e in sweep.eps)}")
        return int(hit[0])

    # ------------------------------------------------------------------ importances (spec-004 §2)
    def _layer_tables(self, sweep: SweepView, original: int, target: int) -> list[LayerTables]:
        """Importance of every channel of every layer for original, target and attacked(s) of every attack."""
        return self._cached(("pathway-tables", sweep.targeted, original, target),
                            lambda: layer_tables(sweep, original, target))

    # ------------------------------------------------------------------ the graph
    def _check_pinned(self, sweep: SweepView, pinned: Sequence) -> list[tuple[int, int]]:
        checked = set()
        for item in pinned:
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise SelectionError(f"pinned neuron {item!r} is not (layer, channel)")
            layer = self.check_pathway_layer(item[0])
            checked.add((layer, check_id(item[1], int(sweep.channels[layer]), f"layer {item[0]!r} channel")))
        return sorted(checked)

    def pathway_graph(self, original: int, target: int, attack: str = "pgd", k_benign: int = 10, k_attack: int = 5,
                      max_images: int = 200, pinned: Sequence[tuple[str, int]] = (), *, targeted: bool = False,
                      seed: int = 0) -> PathwayGraph:
        """The activation pathways of ``original → target`` under ``attack`` (spec-004 §1–§5).

        Args:
            original, target: class ids (different).
            attack: an attack of the sweep (``pgd`` or ``fgsm``).
            k_benign, k_attack: top channels drawn per benign set / per attacked set and strength.
            max_images: images per set the influences are medians over (a seeded sample when more).
            pinned: extra ``(layer, channel)`` neurons to draw (and connect) outside the four groups.
            targeted: use the stored targeted sweep of this class pair instead of the untargeted one.
            seed: seed of the image sample.

        Raises:
            SelectionError: a class, attack, layer or channel id that is not the store's.
            ConfigError: a k or ``max_images`` that is not a non-negative integer (``max_images`` ≥ 1).
            StoreError: no ``sweep`` stage (the message names the command that adds it), or no benign true
                positive of a class.
        """
        original, target = self._check_class_pair(original, target)
        attack = self.check_attack(attack)
        k_benign, k_attack = _positive_int(k_benign, "k_benign"), _positive_int(k_attack, "k_attack")
        max_images, seed = _positive_int(max_images, "max_images", 1), _positive_int(seed, "seed")
        sweep = self._sweep(original, target, targeted)
        tables = self._layer_tables(sweep, original, target)
        for label in (original, target):
            if not len(sweep.benign_rows(label)):
                raise StoreError(self._no_true_positive(label, "the sweep"))
        nodes = select_nodes(sweep, tables, attack, k_benign, k_attack, self._check_pinned(sweep, pinned))
        extras = [[sweep.layers[layer], channel] for layer, channel, group in zip(*nodes) if group == PINNED]
        key = {"version": VERSION, "original": original, "target": target, "attack": attack, "targeted": targeted,
               "targeted_key": sweep.sample_attrs.get("key") if targeted else None, "k_benign": k_benign,
               "k_attack": k_attack, "max_images": max_images, "seed": seed, "pinned": extras}
        settings = dict(original=original, target=target, attack=attack, targeted=targeted, k_benign=k_benign,
                        k_attack=k_attack, max_images=max_images, seed=seed)
        return self._cached(("pathway-graph", json.dumps(key, sort_keys=True)),
                            lambda: self._stored_or_computed(key, sweep, tables, nodes, settings))

    def _stored_or_computed(self, key: dict, sweep: SweepView, tables: list[LayerTables], nodes: tuple,
                            settings: dict) -> PathwayGraph:
        derived = self.store.derived(KIND)
        depends = list(DEPENDS_ON)
        found = derived.get(key, depends_on=depends)
        if found is not None:
            try:
                return PathwayGraph.from_arrays(found.arrays, found.attrs)
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning("stored pathway graph is incomplete (%s); computing it again", exc)
        started = time.perf_counter()
        graph = build_graph(self.model, sweep, tables, nodes, **settings)
        logger.info("pathway graph %s → %s (%s): %d nodes, %d edges in %.2f s", settings["original"],
                    settings["target"], settings["attack"], graph.num_nodes, graph.num_edges,
                    time.perf_counter() - started)
        arrays, attrs = graph.to_arrays()
        derived.put(key, arrays, attrs, depends_on=depends)
        return graph

    # ------------------------------------------------------------------ one neuron (detail view)
    def pathway_neuron_detail(self, layer: str, channel: int, original: int, target: int, attack: str = "pgd", *,
                              targeted: bool = False) -> PathwayNeuronDetail:
        """A neuron's importance against strength for ``original → target``, with its feature visualisation
        and dataset examples (from the ``features`` stage, when the store has it)."""
        original, target = self._check_class_pair(original, target)
        attack = self.check_attack(attack)
        sweep = self._sweep(original, target, targeted)
        index = self.check_pathway_layer(layer)
        channel = check_id(channel, int(sweep.channels[index]), f"layer {layer!r} channel")
        table = self._layer_tables(sweep, original, target)[index]
        a = sweep.attack_index(attack)
        visualization = examples = problem = None
        try:
            library = self.features
            if library.has(layer):
                visualization, examples = library.visualization(layer, channel), library.examples(layer, channel)
            else:
                problem = f"the features stage has no visualisations of {layer}"
        except StoreError as exc:
            problem = str(exc)
        benign_pct = [percentile_or_nan(row)[channel] for row in table.benign]
        return PathwayNeuronDetail(
            layer=layer, channel=channel, original=original, target=target, attack=attack, eps=sweep.eps.copy(),
            attacked=table.attacked[a, :, channel].astype(np.float64),
            attacked_count=sweep.attacked_rows(original, target)[a].sum(-1).astype(np.int64),
            attacked_percentile=np.asarray([percentile_or_nan(row)[channel] for row in table.attacked[a]]),
            original_importance=float(table.benign[0, channel]), target_importance=float(table.benign[1, channel]),
            original_percentile=float(benign_pct[0]), target_percentile=float(benign_pct[1]),
            original_count=int(len(sweep.benign_rows(original))), target_count=int(len(sweep.benign_rows(target))),
            visualization=visualization, examples=examples, features_problem=problem)


__all__ = ["PathwayAnalysis", "PathwayGraph", "PathwayNeuronDetail", "ClassPairCounts", "SweepInfo", "MIN_IMAGES",
           "KIND"]
