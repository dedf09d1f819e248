"""Neuron space of paper 001 (§5.2, §5.3): receptive fields, vulnerability maps, the image- and
neuron-perturbation measures, neuron clustering and context images, for one pair at a time.

Neuron ids index the analysed layer's channels (0 … K−1); the curves, bands, band gaps and
substitution index the dense layer's input, which is the global pooling of those channels.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from functools import cached_property

import numpy as np
import torch

from advlens import measures
from advlens.analysis.core import SessionCore
from advlens.pipeline.sweep import gradient_model

logger = logging.getLogger(__name__)

NEURON_MEASURES = ("band_gap", "iou_bmap", "iou_amap", "substitution")
"""Neuron Vulnerability View orders: band gap (signed, Fig. 4), IoU of the benign RF with the
binarized bMap, IoU of the adversarial RF with the binarized aMap, and direct substitution (benign
probability drop + adversarial probability rise when the neuron alone takes its adversarial value)."""


class MaskRequests:
    """Which top-p% masks of each pair were asked for, to choose how :meth:`NeuronAnalysis.vulnerability_masks`
    finds them: the masks search for the first p of a pair, the full maps once another p is asked (or the maps
    were computed anyway). Thread-safe (the app asks from several request threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._first: dict[tuple[int, int], float] = {}
        self._maps: set[tuple[int, int]] = set()

    def search(self, pair: int, k: int, percent: float) -> bool:
        """True when the masks of ``pair`` at ``percent`` are best found by the search (records the request)."""
        with self._lock:
            first = self._first.setdefault((pair, k), percent)
            return first == percent and (pair, k) not in self._maps

    def maps_computed(self, pair: int, k: int, stride: int) -> None:
        if stride == 1:
            with self._lock:
                self._maps.add((pair, k))


class NeuronAnalysis(SessionCore):
    """Paper 001's neuron-space computations over a store, cached per selection."""

    @cached_property
    def _mask_requests(self) -> MaskRequests:
        return MaskRequests()

    @cached_property
    def substitution_model(self) -> torch.nn.Module:
        """The model that runs Alg. 1's substituted images: a float32 copy with each batch norm folded into the
        convolution before it, channels-last on the CPU (:func:`advlens.pipeline.sweep.gradient_model`). The same
        function up to rounding (the top-20% masks of 10 demo-store pairs were identical) and 1.1–1.3× faster
        on the demo model on 2 cores; the model itself is left as it is."""
        return gradient_model(self.model, "float32")

    # ------------------------------------------------------------------ stored statistics
    @cached_property
    def rf_size(self) -> tuple[int, int]:
        """Default RF size: the input size (H, W)."""
        shape = self.model_config["input_shape"]
        return int(shape[1]), int(shape[2])

    @cached_property
    def map_window(self) -> tuple[int, int]:
        """Default (k, stride) of the vulnerability maps: paper 001's k = 2 (a 4 × 4 window) at stride 1 on
        28 × 28 images, scaled with the image side for larger ones.

        Paper 001 fixes the window for its small images only. On a 224 × 224 photo a 4 × 4 window covers a
        sliver of the object, and the stride-1 map costs 50,176 forward passes (about 15 CPU minutes for
        EfficientNet-Lite0). Users expect the same map at a coarser grain, so the window keeps its share of the
        image (k = 2·s) and the map is computed every s pixels (784 forward passes at any size, exact at the
        grid positions, bilinear in between), with s = ⌈side / 28⌉.
        """
        scale = max(1, math.ceil(max(self.rf_size) / 28))
        return 2 * scale, scale

    def _window(self, k: int | None, stride: int | None) -> tuple[int, int]:
        default_k, default_stride = self.map_window
        return (default_k if k is None else k), (default_stride if stride is None else stride)

    @cached_property
    def _statistics(self) -> dict[str, np.ndarray]:
        group = self.store.group("statistics")
        return {name: group[name][...] for name in group.array_keys()}

    @cached_property
    def _statistics_attrs(self) -> dict:
        return dict(self.store.group("statistics").attrs)

    @cached_property
    def _max_activations(self) -> tuple[np.ndarray, np.ndarray]:
        return self.store.load("activations", "benign_max"), self.store.load("activations", "adv_max")

    @property
    def rf_quantile_levels(self) -> tuple[float, ...]:
        """Quantile levels of the stored per-neuron statistics (RF thresholds without interpolation)."""
        return tuple(float(q) for q in self._statistics_attrs["quantile_levels"])

    @property
    def default_rf_quantile(self) -> float:
        """The quantile level the store uses for RF thresholds by default."""
        return float(self._statistics_attrs["default_quantile"])

    def thresholds(self, quantile: float | None = None, value: float | None = None) -> torch.Tensor:
        """Per-neuron RF thresholds: the stored quantile (default level of the store) or one value.

        Shape: (K,) float32.
        """
        stats = self._statistics
        level = quantile if quantile is not None else self.default_rf_quantile
        return measures.neuron_thresholds(stats["neuron_quantiles"], self._statistics_attrs["quantile_levels"],
                                          level, value=value, num_neurons=stats["neuron_quantiles"].shape[1])

    # ------------------------------------------------------------------ receptive fields (§3.2)
    def feature_maps(self, pair: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Stored analysed-layer maps of a pair. Shape: two (K, h, w) float32."""
        pair = self.check_pair(pair)
        return self._cached(("maps", pair), lambda: (
            torch.from_numpy(self.store.array("activations", "benign_maps")[pair]),
            torch.from_numpy(self.store.array("activations", "adv_maps")[pair])))

    def receptive_fields(self, pair: int, quantile: float | None = None, value: float | None = None,
                         size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """RF masks of all neurons on the benign and adversarial image, with shared thresholds.

        Shape: two (K, H, W) bool, H × W = ``size`` (default: input size).
        """
        size = tuple(size) if size is not None else self.rf_size
        key = ("rf", self.check_pair(pair), quantile, value, size)

        def compute():
            benign, adversarial = self.feature_maps(pair)
            limit = self.thresholds(quantile, value)
            return measures.rf_masks(benign, limit, size), measures.rf_masks(adversarial, limit, size)
        return self._cached(key, compute)

    def combined_rf(self, pair: int, neurons: Sequence[int], op: str = "union",
                    quantile: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Union or intersection of the RFs of a set of neurons. Shape: two (H, W) bool."""
        index = self.check_neurons(neurons)
        benign, adversarial = self.receptive_fields(pair, quantile)
        return (measures.combine_receptive_fields(benign, index, op),
                measures.combine_receptive_fields(adversarial, index, op))

    # ------------------------------------------------------------------ image-perturbation measure (Alg. 1)
    def vulnerability_maps(self, pair: int, k: int | None = None, stride: int | None = None
                           ) -> measures.VulnerabilityMaps:
        """bMap and aMap of a pair (Alg. 1); k and stride default to :attr:`map_window`.
        Shape: two (H, W) float32 on the CPU."""
        pair = self.check_pair(pair)
        k, stride = self._window(k, stride)

        def compute():
            benign, adversarial = (torch.from_numpy(a[0]) for a in self.pair_images([pair]))
            info = self.pair_info(pair)
            maps = measures.vulnerability_maps(self.substitution_model, benign, adversarial, info["label"],
                                               info["adv_pred"], k=k, stride=stride, device=self.device)
            self._mask_requests.maps_computed(pair, k, stride)
            return measures.VulnerabilityMaps(maps.bmap.cpu(), maps.amap.cpu())
        return self._cached(("vmap", pair, k, stride), compute)

    def vulnerability_masks(self, pair: int, top_percent: float = 20.0, k: int | None = None,
                            stride: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The binarized bMap and aMap (top ``top_percent`` %), equal to ``binarize_top`` of
        :meth:`vulnerability_maps`. Shape: two (H, W) bool.

        The cheapest way that gives them: from the full maps when they are cached (any p for free, so
        moving the app's top-p% slider costs no forward pass); the first p asked of a pair by
        :func:`advlens.measures.vulnerability_masks`, which needs only part of the forward passes; a
        second p of the same pair computes the full maps (every further p is then free).
        """
        pair = self.check_pair(pair)
        k, stride = self._window(k, stride)
        if stride == 1 and self._mask_requests.search(pair, k, top_percent):
            return self._cached(("vmask", pair, top_percent, k), lambda: self._searched_masks(pair, top_percent, k))
        bmap, amap = self.vulnerability_maps(pair, k, stride)
        return measures.binarize_top(bmap, top_percent), measures.binarize_top(amap, top_percent)

    def _searched_masks(self, pair: int, top_percent: float, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The masks by :func:`advlens.measures.vulnerability_masks` (stride 1). Shape: two (H, W) bool, CPU."""
        benign, adversarial = (torch.from_numpy(a[0]) for a in self.pair_images([pair]))
        info = self.pair_info(pair)
        found = measures.vulnerability_masks(self.substitution_model, benign, adversarial, info["label"],
                                             info["adv_pred"], top_percent, k, device=self.device)
        logger.debug("pair %d: top-%g%% masks from %d forwards", pair, top_percent, found.forwards)
        return found.bmap.cpu(), found.amap.cpu()

    def image_perturbation(self, pair: int, top_percent: float = 20.0, quantile: float | None = None,
                           k: int | None = None, stride: int | None = None) -> measures.ImagePerturbationScores:
        """IoU of each neuron's benign RF with the bMap mask and adversarial RF with the aMap mask."""
        k, stride = self._window(k, stride)
        key = ("ipm", self.check_pair(pair), top_percent, quantile, k, stride)

        def compute():
            benign_rf, adversarial_rf = self.receptive_fields(pair, quantile)
            bmask, amask = self.vulnerability_masks(pair, top_percent, k, stride)
            rf_size = tuple(benign_rf.shape[-2:])
            if tuple(bmask.shape) != rf_size:  # RFs at another size: compare at the RF size
                bmask, amask = (torch.nn.functional.interpolate(m[None, None].float(), size=rf_size)[0, 0] > 0.5
                                for m in (bmask, amask))
            return measures.image_perturbation_scores(benign_rf, adversarial_rf, bmask, amask)
        return self._cached(key, compute)

    # ------------------------------------------------------------------ neuron-perturbation measure (§5.2.1)
    def pooled(self, pair: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled penultimate vectors of a pair. Shape: two (D,) float32."""
        pair = self.check_pair(pair)
        return self._cached(("pooled", pair), lambda: (
            torch.from_numpy(self.store.array("activations", "benign_pooled")[pair]),
            torch.from_numpy(self.store.array("activations", "adv_pooled")[pair])))

    def curves(self, pair: int) -> measures.ContributionCurves:
        """Activation × weight of the benign image (benign class) and adversarial image (adversarial class)."""
        info = self.pair_info(pair)
        benign, adversarial = self.pooled(pair)
        return measures.contribution_curves(benign, adversarial, self._statistics["dense_weight"], info["label"],
                                            info["adv_pred"])

    @property
    def band_kind(self) -> str:
        """The store's default band kind (one of ``measures.BAND_KINDS``; stores without it: the library's)."""
        return str(self._statistics_attrs.get("band_kind", measures.DEFAULT_BAND_KIND))

    @property
    def band_level(self) -> float:
        """The store's default band level (for :attr:`band_kind`)."""
        return float(self._statistics_attrs.get("band_level", measures.BAND_LEVELS[self.band_kind]))

    def _band_choice(self, level: float | None, kind: str | None) -> tuple[str, float]:
        """``(kind, level)`` with the store's defaults filled in: no kind → :attr:`band_kind`; no level →
        :attr:`band_level` for that kind, else the kind's own default (``measures.BAND_LEVELS``)."""
        kind = self.band_kind if kind is None else kind
        if level is None:
            level = self.band_level if kind == self.band_kind else measures.BAND_LEVELS.get(kind, 0.5)
        measures.check_band(kind, level)
        return kind, float(level)

    def bands(self, level: float | None = None, kind: str | None = None) -> measures.Bands:
        """Class bands of activation × weight (see :mod:`advlens.measures.bands`): ``"ci"``, the
        confidence interval of the class mean at ``level``; ``"percentile"``, the central ``level`` share of
        the class distribution (0.8: 10th–90th percentiles). Defaults: the store's :attr:`band_kind` and
        :attr:`band_level`.

        Shape: low, high (C, D) float32.
        """
        kind, level = self._band_choice(level, kind)
        return self._cached(("bands", kind, level), lambda: measures.bands_of_kind(
            self._statistics, kind, level, self._statistics_attrs.get("percentile_levels")))

    def band_gap(self, pair: int, level: float | None = None, kind: str | None = None) -> torch.Tensor:
        """Band gap per neuron for the pair's benign and adversarial classes (> 0 excited, < 0 inhibited).

        Shape: (D,) float32.
        """
        info = self.pair_info(pair)
        return measures.pair_band_gap(self.bands(level, kind), info["label"], info["adv_pred"])

    def band_regions(self, pairs: Sequence[int] | None = None, level: float | None = None,
                     kind: str | None = None) -> np.ndarray:
        """Per pair, the shares of neurons in Fig. 4's regions A (band gap > 0, excited), B (= 0) and C
        (< 0, inhibited); average the rows for a store-wide figure (``benchmarks/band_regions.py``).

        Shape: (len(pairs), 3) float64, rows summing to 1 (default: every pair).
        """
        ids = np.arange(self.num_pairs) if pairs is None else self.check_pairs(pairs)
        bands = self.bands(level, kind)
        cells = np.stack([self.table["label"][ids], self.table["adv_pred"][ids]], axis=1)
        unique, inverse = np.unique(cells, axis=0, return_inverse=True)
        shares = np.stack([measures.band_regions(measures.pair_band_gap(bands, int(b), int(a)))
                           for b, a in unique]) if len(unique) else np.zeros((0, 3))
        return shares[inverse.reshape(-1)] if len(ids) else np.zeros((0, 3))

    def substitution(self, pair: int) -> measures.NeuronSubstitution:
        """Probability changes when one neuron at a time takes its adversarial pooled value."""
        pair = self.check_pair(pair)

        def compute():
            info = self.pair_info(pair)
            benign, adversarial = self.pooled(pair)
            result = measures.neuron_substitution(self.model, benign, adversarial, info["label"], info["adv_pred"],
                                                  device=self.device)
            return measures.NeuronSubstitution(result.benign_drop.cpu(), result.adversarial_rise.cpu())
        return self._cached(("substitution", pair), compute)

    def neuron_ranking(self, pair: int, measure: str = "band_gap", *, top_percent: float = 20.0,
                       quantile: float | None = None, level: float | None = None, k: int | None = None,
                       stride: int | None = None,
                       kind: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Neuron order (most vulnerable first) and the score of each neuron, by a :data:`NEURON_MEASURES`.

        ``level`` and ``kind`` choose the bands of ``"band_gap"`` (default: the store's, see :meth:`bands`).

        Shape: order (K,) int64; scores (K,) float32 indexed by neuron id.
        """
        if measure == "band_gap":
            curves = self.curves(pair)
            scores = self.band_gap(pair, level, kind).numpy()
            return measures.rank_band_gap(scores, "signed", (curves.adversarial - curves.benign).numpy()), scores
        if measure in ("iou_bmap", "iou_amap"):
            result = self.image_perturbation(pair, top_percent, quantile, k, stride)
            if measure == "iou_bmap":
                return result.benign_ranking, result.benign_iou.numpy()
            return result.adversarial_ranking, result.adversarial_iou.numpy()
        if measure == "substitution":
            result = self.substitution(pair)
            scores = (result.benign_drop + result.adversarial_rise).numpy()
            return measures.rank_descending(scores), scores
        raise ValueError(f"measure must be one of {NEURON_MEASURES}, got {measure!r}")

    # ------------------------------------------------------------------ clustering (§5.2.2)
    def clustering(self, pair: int, metric: str = measures.DEFAULT_METRIC, method: str | None = None,
                   quantile: float | None = None) -> measures.NeuronClustering:
        """Hierarchical clustering of the analysed layer's neurons for a pair (§5.2.2).

        ``metric``: ``"rf_l2"`` (default: L2 between the RF images — benign and adversarial image masked by
        the neuron's RFs, concatenated), ``"mask_l2"``, ``"rf_iou"`` or ``"activation_l2"``; ``method``:
        the linkage (default ``"ward"``; ``"complete"`` for ``"rf_iou"``); see
        :mod:`advlens.measures.clustering` for why.
        """
        method = measures.default_method(metric) if method is None else method
        key = ("cluster", self.check_pair(pair), metric, method, quantile)

        def compute():
            if metric == "activation_l2":
                benign, adversarial = self.feature_maps(pair)
            else:
                benign, adversarial = self.receptive_fields(pair, quantile)
                if metric == "rf_l2":
                    images = self.pair_images([pair])
                    benign = measures.rf_images(torch.from_numpy(images[0][0]), benign)
                    adversarial = measures.rf_images(torch.from_numpy(images[1][0]), adversarial)
            return measures.NeuronClustering(metric, method).fit(benign, adversarial)
        return self._cached(key, compute)

    def cluster_members(self, pair: int, nodes: int | Sequence[int], metric: str = measures.DEFAULT_METRIC,
                        method: str | None = None, quantile: float | None = None) -> np.ndarray:
        """Neurons under dendrogram node(s) of :meth:`clustering` (SciPy node ids, checked).

        Shape: returns int64 sorted unique neuron ids.
        """
        tree = self.clustering(pair, metric, method, quantile)
        ids = [nodes] if np.isscalar(nodes) else list(nodes)  # type: ignore[arg-type]
        return tree.members([self.check_node(node, tree.n_neurons_) for node in ids])

    # ------------------------------------------------------------------ context images (§5.3)
    def _stored_neuron_rfs(self, maps_name: str, pairs: np.ndarray, neuron: int,
                           limit: torch.Tensor) -> torch.Tensor:
        """RFs of one neuron on a few pairs, read from the stored maps ``maps_name``. Shape: (n, H, W) bool."""
        if not len(pairs):
            return torch.zeros(0, *self.rf_size, dtype=torch.bool)
        maps = self.store.array("activations", maps_name)
        selected = torch.from_numpy(np.stack([maps[int(i), neuron] for i in pairs]))
        return measures.rf_masks(selected[:, None], limit, self.rf_size)[:, 0]

    def context(self, neuron: int, pairs: Sequence[int] | None = None, m: int = 6, by: str = "activation",
                quantile: float | None = None) -> measures.ContextImages:
        """Top-m benign and adversarial images of ``pairs`` for a neuron (§5.3), ids mapped to pair ids.

        ``by="activation"`` ranks by the neuron's maximal activation; ``"confidence"`` by the probability
        of the benign label (benign side) and of the adversarial label (adversarial side).
        """
        neuron = self.check_neuron(neuron)
        ids = np.arange(self.num_pairs) if pairs is None else self.check_pairs(pairs)
        if by == "activation":
            benign_max, adv_max = self._max_activations
            benign_scores, adv_scores = benign_max[ids], adv_max[ids]
        elif by == "confidence":
            t = self.table
            benign_scores = measures.class_confidence(t["benign_probs"][ids], t["label"][ids])
            adv_scores = measures.class_confidence(t["adv_probs"][ids], t["adv_pred"][ids])
        else:
            raise ValueError(f"by must be 'activation' or 'confidence', got {by!r}")
        top = measures.context_images(neuron, benign_scores, adv_scores, m)
        benign_ids, adv_ids = ids[top.benign], ids[top.adversarial]
        limit = self.thresholds(quantile)[neuron]
        benign_rfs = self._stored_neuron_rfs("benign_maps", benign_ids, neuron, limit)
        adv_rfs = self._stored_neuron_rfs("adv_maps", adv_ids, neuron, limit)
        return measures.ContextImages(benign_ids, adv_ids, top.benign_scores, top.adversarial_scores,
                                      benign_rfs, adv_rfs)
