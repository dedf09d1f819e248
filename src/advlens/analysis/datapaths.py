"""paper 003's datapaths (AEVis, spec-003): a pair's datapath chain computed on demand and kept in the store, contribution analysis.

:class:`DatapathAnalysis` is mixed into :class:`advlens.analysis.Session`::

    session.datapath_examples()                    # the picker: pairs, classes, adversarialness, stored?
    session.datapath_layers()                      # gate points with their groups and widths
    paths = session.pair_datapaths(12)             # PairDatapaths: z, critical sets, d1/d2/d3, acti (≈ 8 s)
    session.stored_pair_datapaths(12)              # the same, or None when it would have to be computed
    session.datapath_contribution(12, "layer3", 5, "layer2", aoi=mask)   # Eq. 7/8 per source map
    session.datapath_activation_maps(12, "layer3", 5)                   # the three maps of one channel

A pair's datapaths are the chain adv → src → ``targets`` benign images of the adversarial class
(spec-003 §1.2; the targets a seeded draw among the attack stage's true positives of that class,
never the pair itself), computed once, cached in the session and written to
``store.derived("datapaths")``, keyed by the pair and the settings and stale once the ``attack`` or
``activations`` stage is redone.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from advlens.analysis import datapaths_pair
from advlens.analysis.core import SessionCore, check_id
from advlens.analysis.datapaths_pair import ROLES, PairDatapaths
from advlens.analysis.datapaths_results import (ADVERSARIALNESS, DatapathActivationMaps, DatapathContribution,
                                                DatapathExamples, DatapathFeatures, GateLayer)
from advlens.datapaths import Contribution, default_gate_layers
from advlens.datapaths import contribution as contribution_analysis
from advlens.datapaths.region import check_aoi
from advlens.errors import ConfigError, StoreError
from advlens.models import AnalysedModel
from advlens.store.derived import stage_stamp

logger = logging.getLogger(__name__)

KIND = "datapaths"
DEPENDS_ON = ("attack", "activations")
VERSION = 1
"""Bumped when the stored result's layout or computation changes (older results are computed again)."""
DEFAULTS: dict[str, Any] = {"lam": 0.1, "gamma": 0.1, "steps": 200, "lr": 0.05, "tau": 0.5, "seed": 0}
"""Spec-003 §1.2's extraction settings (λ̃, γ̃, T, Adam's lr, τ) and the seed of the target draw."""
METHODS = ("sgd", "fast")
MEMO_SIZE = 32
"""Pairs' results :meth:`DatapathAnalysis.stored_pair_datapaths` finds in the session without the store."""


@dataclass(frozen=True)
class PairDatapathJob:
    """One pair's datapath computation, detached from the session (:meth:`DatapathAnalysis.pair_datapath_job`).

    Attributes:
        key: the ``store.derived("datapaths")`` key of the result. pair: the pair id.
        images: adv, src and the targets, (2 + K, C, H, W) float32 in [0, 1]. rows, dataset_index: the
        targets' rows of the attack stage and dataset indices, (K,) int64. settings: λ̃, γ̃, T, lr, τ, seed.
    """

    key: dict[str, Any]
    pair: int
    images: np.ndarray
    rows: np.ndarray
    dataset_index: np.ndarray
    settings: dict[str, Any]

    def compute(self, model: AnalysedModel, progress: Callable[[float, str], None] | None = None) -> PairDatapaths:
        """The pair's datapaths (:func:`advlens.analysis.datapaths_pair.compute_pair_datapaths`)."""
        images = torch.from_numpy(self.images)
        return datapaths_pair.compute_pair_datapaths(model, self.pair, images[0], images[1], images[2:], self.rows,
                                                     self.dataset_index, progress=progress, **self.settings)


def _positive(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


class DatapathAnalysis(SessionCore):
    """The datapaths part of a :class:`~advlens.analysis.Session`."""

    # ------------------------------------------------------------------ layers
    def datapath_layers(self) -> list[GateLayer]:
        """The gate points (:func:`advlens.datapaths.default_gate_layers`) in execution order."""
        def compute() -> list[GateLayer]:
            graph, start, out = self.model.graph, 0, []
            for name in default_gate_layers(self.model):
                node = graph[name]
                out.append(GateLayer(name, node.block or name, node.channels, start, start + node.channels,
                                     (int(node.shape[1]), int(node.shape[2]))))
                start += node.channels
            return out
        return self._cached(("datapath-layers",), compute)

    def check_datapath_layer(self, layer: Any) -> GateLayer:
        """A gate point by name, else :class:`ConfigError` naming the valid ones."""
        for gate in self.datapath_layers():
            if gate.name == layer:
                return gate
        raise ConfigError(f"{str(layer)[:60]!r} is not a gate layer of the datapaths; use one of "
                          f"{', '.join(g.name for g in self.datapath_layers())}")

    # ------------------------------------------------------------------ the picker
    def datapath_examples(self, targets: int = 10, **settings: Any) -> DatapathExamples:
        """Every pair with its classes, the adversarialness proxy and whether its datapaths are stored."""
        targets = _positive(targets, "targets")
        t = self.table
        probs = t["adv_probs"].astype(np.float64)
        rows = np.arange(len(probs))
        top = probs[rows, t["adv_pred"]]
        others = probs.copy()
        others[rows, t["adv_pred"]] = -np.inf
        score = 1.0 - (top - others.max(axis=1))
        stored = self._datapath_stored_mask(targets, self._datapath_settings(settings))
        return DatapathExamples(pair=t["pair"].astype(np.int64), dataset_index=t["dataset_index"].astype(np.int64),
                                label=t["label"].astype(np.int64), adv_pred=t["adv_pred"].astype(np.int64),
                                adversarialness=score, stored=stored, class_names=tuple(self.class_names))

    def _datapath_stored_mask(self, targets: int, settings: dict[str, Any]) -> np.ndarray:
        """Which pairs have a fresh stored result of these settings (reads only the small sidecars), or one
        in the session's memo (a read-only store keeps none)."""
        derived = self.store.derived(KIND)
        stamps = {s: stage_stamp(self.store.manifest["stages"][s]) for s in DEPENDS_ON}
        wanted = self._datapath_key(0, targets, settings)
        mask = np.zeros(self.num_pairs, dtype=bool)

        def mark(key: Any) -> None:
            pair = key.get("pair") if isinstance(key, dict) else None
            if isinstance(pair, int) and 0 <= pair < self.num_pairs and key == {
                    **wanted, "pair": pair, "dataset_index": int(self.table["dataset_index"][pair])}:
                mask[pair] = True

        for sidecar in sorted(derived.folder.glob("*.json")) if derived.folder.is_dir() else ():
            try:
                record = json.loads(sidecar.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and record.get("stages") == stamps and sidecar.with_suffix(".npz").is_file():
                mark(record.get("key"))
        memo, lock = self._datapath_memo()
        with lock:
            texts = list(memo)
        for text in texts:
            mark(json.loads(text))
        return mask

    # ------------------------------------------------------------------ a pair's datapaths
    @staticmethod
    def _datapath_settings(settings: dict[str, Any]) -> dict[str, Any]:
        unknown = set(settings) - set(DEFAULTS)
        if unknown:
            raise ConfigError(f"unknown datapath setting(s) {', '.join(sorted(unknown))}; use {', '.join(DEFAULTS)}")
        merged = {**DEFAULTS, **settings}
        for name in ("lam", "gamma", "lr", "tau"):
            value = merged[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{name} must be a non-negative number, got {value!r}")
            merged[name] = float(value)
        if not 0 < merged["tau"] <= 1 or merged["lr"] <= 0:
            raise ConfigError(f"tau must lie in (0, 1] and lr be positive, got tau={merged['tau']}, lr={merged['lr']}")
        merged["steps"] = _positive(merged["steps"], "steps")
        if isinstance(merged["seed"], bool) or not isinstance(merged["seed"], (int, np.integer)) or merged["seed"] < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {merged['seed']!r}")
        merged["seed"] = int(merged["seed"])
        return merged

    def _datapath_key(self, pair: int, targets: int, settings: dict[str, Any]) -> dict[str, Any]:
        return {"version": VERSION, "pair": pair, "dataset_index": int(self.table["dataset_index"][pair]),
                "targets": targets, "layers": [g.name for g in self.datapath_layers()], **settings}

    def datapath_targets(self, pair: int, targets: int = 10, seed: int = 0) -> np.ndarray:
        """Rows of the attack stage of the pair's targets: a seeded draw of ``targets`` benign true positives
        of the adversarial class (all of them when fewer), never the pair's own image. Shape: (K,) int64."""
        pair, targets = self.check_pair(pair), _positive(targets, "targets")
        labels, preds = self._datapath_attack_labels()
        adv_class = int(self.table["adv_pred"][pair])
        pool = np.flatnonzero((labels == adv_class) & (preds == adv_class))
        pool = pool[pool != int(self.table["row"][pair])]
        if not len(pool):
            raise StoreError(f"pair {pair} has no target images: "
                             + self._no_true_positive(adv_class, "the attack stage"))
        rng = np.random.default_rng([int(seed), pair])
        return np.sort(rng.choice(pool, size=min(targets, len(pool)), replace=False)).astype(np.int64)

    def _datapath_attack_labels(self) -> tuple[np.ndarray, np.ndarray]:
        return self._cached(("datapath-attack-labels",), lambda: (self.store.load("attack", "label"),
                                                                   self.store.load("attack", "benign_pred")))

    def datapath_images(self, pair: int, target_rows: Sequence[int]) -> np.ndarray:
        """adv, src and the given targets' images. Shape: (2 + K, C, H, W) float32 in [0, 1]."""
        benign, adversarial = self.pair_images([pair])
        rows = np.asarray(target_rows, dtype=np.int64)
        order = np.argsort(rows)
        targets = np.empty((len(rows), *benign.shape[1:]), dtype=np.float32)
        if len(rows):
            targets[order] = self.store.array("attack", "benign").get_orthogonal_selection((rows[order],))
        return np.concatenate([adversarial, benign, targets]).astype(np.float32)

    def pair_datapaths(self, pair: int, *, targets: int = 10,
                       progress: Callable[[float, str], None] | None = None, **settings: Any) -> PairDatapaths:
        """The pair's datapath chain adv → src → targets (computed once, then read from the store).

        Args:
            pair: a pair id. targets: K target images of the adversarial class.
            progress: ``progress(fraction, message)`` during the extraction (every 10 solver steps).
            settings: ``lam``, ``gamma``, ``steps``, ``lr``, ``tau``, ``seed`` (defaults :data:`DEFAULTS`).

        Raises:
            SelectionError: a bad pair id. ConfigError: a bad setting. StoreError: no target images.
        """
        pair, targets = self.check_pair(pair), _positive(targets, "targets")
        merged = self._datapath_settings(settings)
        key = self._datapath_key(pair, targets, merged)
        text = json.dumps(key, sort_keys=True)

        def compute() -> PairDatapaths:
            memo, lock = self._datapath_memo()
            with lock:
                if text in memo:
                    return memo[text]
            result = self._datapath_computed(key, progress)
            self._datapath_remember(text, result)
            return result
        return self._cached(("datapaths", text), compute)

    def stored_pair_datapaths(self, pair: int, targets: int = 10, **settings: Any) -> PairDatapaths | None:
        """The pair's datapaths when the session or the store holds them, else None (nothing is computed).

        Never waits: while another thread computes the same pair (the app's job), this answers None at once.
        """
        pair, targets = self.check_pair(pair), _positive(targets, "targets")
        key = self._datapath_key(pair, targets, self._datapath_settings(settings))
        text = json.dumps(key, sort_keys=True)
        memo, lock = self._datapath_memo()
        with lock:
            if text in memo:
                memo.move_to_end(text)
                return memo[text]
        found = self._datapath_read(key)
        if found is not None:
            self._datapath_remember(text, found)
        return found

    def _datapath_memo(self) -> tuple[OrderedDict[str, PairDatapaths], threading.Lock]:
        """The session's last results (what a read-only store cannot keep), apart from the blocking cache."""
        return (self.__dict__.setdefault("_datapath_results", OrderedDict()),
                self.__dict__.setdefault("_datapath_results_lock", threading.Lock()))

    def _datapath_remember(self, text: str, result: PairDatapaths) -> None:
        memo, lock = self._datapath_memo()
        with lock:
            memo[text] = result
            memo.move_to_end(text)
            while len(memo) > MEMO_SIZE:
                memo.popitem(last=False)

    def _datapath_read(self, key: dict[str, Any]) -> PairDatapaths | None:
        found = self.store.derived(KIND).get(key, depends_on=DEPENDS_ON)
        if found is None:
            return None
        try:
            return PairDatapaths.from_arrays(found.arrays, found.attrs)
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("stored datapaths of pair %s are incomplete (%s); computing them again", key["pair"], exc)
            return None

    def pair_datapath_job(self, pair: int, *, targets: int = 10, **settings: Any) -> PairDatapathJob | None:
        """What computing the pair's datapaths takes — for running it elsewhere, e.g. as a Ray task
        (``advlens datapaths --executor ray``) — or None when the store holds them already. Give the result
        of :meth:`PairDatapathJob.compute` to :meth:`keep_pair_datapaths`. Arguments as :meth:`pair_datapaths`.
        """
        pair, targets = self.check_pair(pair), _positive(targets, "targets")
        key = self._datapath_key(pair, targets, self._datapath_settings(settings))
        return None if self._datapath_read(key) is not None else self._datapath_job(key)

    def keep_pair_datapaths(self, job: PairDatapathJob, result: PairDatapaths) -> None:
        """Write a job's result to ``store.derived("datapaths")`` and keep it in the session, as
        :meth:`pair_datapaths` does."""
        self._datapath_put(job.key, result)
        self._datapath_remember(json.dumps(job.key, sort_keys=True), result)

    def _datapath_job(self, key: dict[str, Any]) -> PairDatapathJob:
        settings = {name: key[name] for name in DEFAULTS}
        rows = self.datapath_targets(key["pair"], key["targets"], settings["seed"])
        return PairDatapathJob(key, key["pair"], self.datapath_images(key["pair"], rows), rows,
                               self.store.load("attack", "dataset_index")[rows], settings)

    def _datapath_put(self, key: dict[str, Any], result: PairDatapaths) -> None:
        arrays, attrs = result.to_arrays()
        self.store.derived(KIND).put(key, arrays, attrs, depends_on=DEPENDS_ON)

    def _datapath_computed(self, key: dict[str, Any], progress: Callable[[float, str], None] | None) -> PairDatapaths:
        found = self._datapath_read(key)
        if found is not None:
            return found
        job = self._datapath_job(key)
        result = job.compute(self.model, progress)
        logger.info("datapaths of pair %d (adv + src + %d targets) in %.1f s", job.pair, len(job.rows), result.seconds)
        self._datapath_put(key, result)
        return result

    # ------------------------------------------------------------------ contribution analysis
    def datapath_contribution(self, pair: int, target_layer: str, target_map: int, source_layer: str, *,
                              role: str = "adv", aoi: Any = None, method: str = "sgd", targets: int = 10,
                              target: int | None = None, margin: int = 0, **settings: Any) -> DatapathContribution:
        """Contribution of every map of ``source_layer`` to map ``target_map`` of ``target_layer`` (Eq. 7, or
        Eq. 8 inside ``aoi``), solved jointly for adv, src and a target (default the representative).

        Args:
            aoi: None (the whole map), a bool mask (h, w) of the target layer's grid, or (row, column) cells.
            role: ``adv``, ``src`` or ``tar``: whose contributions ``values`` and ``order`` are.
            method: ``sgd`` (Eq. 8, T = 100) or ``fast`` (the first-order approximation).
            settings: the pair's datapath settings (see :meth:`pair_datapaths`); computes them when missing.
        """
        pair = self.check_pair(pair)
        target_gate, source_gate = self.check_datapath_layer(target_layer), self.check_datapath_layer(source_layer)
        target_map = check_id(target_map, target_gate.channels, f"layer {target_gate.name!r} map")
        if role not in ROLES:
            raise ConfigError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
        if method not in METHODS:
            raise ConfigError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
        if source_gate.start >= target_gate.start or not self.model.graph.reaches(source_gate.name, target_gate.name):
            raise ConfigError(f"source layer {source_gate.name!r} does not come before target layer "
                              f"{target_gate.name!r}: pick an earlier gate layer")
        mask = check_aoi(self._datapath_aoi(aoi, target_gate.grid), target_gate.grid)
        paths = self.pair_datapaths(pair, targets=targets, **settings)
        target = paths.representative if target is None else check_id(target, paths.num_targets, "target")
        key = ("datapath-contribution", pair, targets, json.dumps(self._datapath_settings(settings), sort_keys=True),
               target, target_gate.name, target_map, source_gate.name, mask.numpy().tobytes(), method, margin)

        def compute() -> tuple[Contribution, float]:
            images = torch.from_numpy(self.datapath_images(pair, paths.target_rows[[target]]))
            started = time.perf_counter()
            result = contribution_analysis(self.model, images, target_gate.name, target_map, source_gate.name, mask,
                                           method=method, margin=margin)
            return result, time.perf_counter() - started

        result, seconds = self._cached(key, compute)
        row = ROLES.index(role)
        critical = paths.layer_critical(source_gate.name)[paths.row(role, target)]
        return DatapathContribution(pair=pair, role=role, target=target, contribution=result,
                                    values=result.z[row].numpy().astype(np.float32),
                                    order=np.asarray(result.ranking(row), dtype=np.int64),
                                    in_datapath=critical.copy(), seconds=seconds)

    @staticmethod
    def _datapath_aoi(aoi: Any, grid: tuple[int, int]) -> torch.Tensor | None:
        """None, a bool mask (h, w), or (row, column) cells → a bool mask (h, w) (checked by ``check_aoi``)."""
        if aoi is None:
            return None
        array = np.asarray(aoi)
        if array.dtype == bool:
            return torch.from_numpy(array.copy())
        if array.ndim != 2 or array.shape[1] != 2 or array.dtype.kind not in "iu":
            raise ConfigError(f"the area of interest must be a bool mask of shape {grid} or a list of (row, column) "
                              f"cells, got an array of shape {array.shape} and dtype {array.dtype}")
        bad = (array[:, 0] < 0) | (array[:, 0] >= grid[0]) | (array[:, 1] < 0) | (array[:, 1] >= grid[1])
        if bad.any():
            raise ConfigError(f"area-of-interest cells {array[bad][:3].tolist()} lie outside the {grid[0]}×{grid[1]} "
                              "grid of the target layer")
        mask = torch.zeros(grid, dtype=torch.bool)
        mask[array[:, 0], array[:, 1]] = True
        return mask

    # ------------------------------------------------------------------ the neuron level
    def datapath_activation_maps(self, pair: int, layer: str, channel: int, *, targets: int = 10,
                                 target: int | None = None, **settings: Any) -> DatapathActivationMaps:
        """Channel ``channel`` of gate layer ``layer`` on adv, src and a target (default the representative
        of the pair's stored datapaths; computed when missing)."""
        pair = self.check_pair(pair)
        gate = self.check_datapath_layer(layer)
        channel = check_id(channel, gate.channels, f"layer {gate.name!r} map")
        paths = self.pair_datapaths(pair, targets=targets, **settings)
        target = paths.representative if target is None else check_id(target, paths.num_targets, "target")

        def compute() -> tuple[np.ndarray, np.ndarray]:
            images = self.datapath_images(pair, paths.target_rows[[target]])
            maps = self.model.capture(torch.from_numpy(images), [gate.name])[gate.name]
            return maps.float().numpy(), images
        maps, images = self._cached(("datapath-maps", pair, int(paths.target_rows[target]), gate.name), compute)
        chosen = maps[:, channel].copy()
        return DatapathActivationMaps(pair=pair, layer=gate.name, channel=channel, target=target, maps=chosen,
                                      images=images, vmax=float(chosen.max()))

    def datapath_features(self, layer: str, channel: int) -> DatapathFeatures:
        """The map's feature visualisation and top dataset examples (the ``features`` stage)."""
        gate = self.check_datapath_layer(layer)
        channel = check_id(channel, gate.channels, f"layer {gate.name!r} map")
        try:
            library = self.features
            if not library.has(gate.name):
                return DatapathFeatures(gate.name, channel, None, None,
                                        f"the features stage has no visualisations of {gate.name}")
            return DatapathFeatures(gate.name, channel, library.visualization(gate.name, channel),
                                    library.examples(gate.name, channel), None)
        except StoreError as exc:
            return DatapathFeatures(gate.name, channel, None, None, str(exc))


__all__ = ["DatapathAnalysis", "DatapathActivationMaps", "DatapathContribution", "DatapathExamples",
           "DatapathFeatures", "GateLayer", "PairDatapaths", "ADVERSARIALNESS", "DEFAULTS", "KIND"]
