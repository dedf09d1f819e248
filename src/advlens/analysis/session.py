"""``Session``: every per-selection computation of the app, over one analysis store.

The app and a notebook call the same methods; results are cached in a bounded LRU cache keyed by
the arguments. Pair ids index the successful pairs of the store (0 … P−1, the order of
``store.pair_table()``); neuron ids index the channels of the analysed layer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from advlens import measures
from advlens.analysis.cache import BoundedCache
from advlens.errors import StoreError
from advlens.models import AnalysedModel, load_model
from advlens.models.fingerprint import model_fingerprint
from advlens.store import AnalysisStore, open_store

logger = logging.getLogger(__name__)

SORT_ORDERS = ("perturbation_asc", "perturbation_desc", "benign_drop", "adversarial_rise")
"""Image Grid orders (paper 001 §5.1): L2 perturbation increasing / decreasing, largest drop of the
benign class probability first, largest rise of the adversarial class probability first."""

NEURON_MEASURES = ("band_gap", "iou_bmap", "iou_amap", "substitution")
"""Neuron Vulnerability View orders: band gap (signed, Fig. 4), IoU of the benign RF with the
binarized bMap, IoU of the adversarial RF with the binarized aMap, and direct substitution (benign
probability drop + adversarial probability rise when the neuron alone takes its adversarial value)."""


class Session:
    """Cached analysis of one store.

    Args:
        store: an opened store or its path (it must be complete).
        model: the model ``prepare`` used; default: loaded from the store's configuration and checked
            against the stored weight fingerprint.
        device: where forward passes run (default: ``cuda`` when available, else ``cpu``).
        cache_size: number of cached results.
    """

    def __init__(self, store: AnalysisStore | str | Path, model: AnalysedModel | None = None, *,
                 device: str | torch.device | None = None, cache_size: int = 128) -> None:
        self.store = store if isinstance(store, AnalysisStore) else open_store(store)
        if not self.store.complete:
            raise StoreError(
                f"the store at {self.store.root} is unfinished (finished: {', '.join(self.store.finished_stages)}); "
                "run the same `advlens prepare` command again to complete it"
            )
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._model = model
        self.cache = BoundedCache(cache_size)

    # ------------------------------------------------------------------ store-level facts
    @property
    def class_names(self) -> list[str]:
        return self.store.class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @cached_property
    def table(self) -> dict[str, np.ndarray]:
        """Per pair: dataset_index, label, benign_pred, adv_pred, benign_probs, adv_probs, l2, linf."""
        return self.store.pair_table()

    @property
    def num_pairs(self) -> int:
        return int(len(self.table["pair"]))

    @cached_property
    def num_neurons(self) -> int:
        """Neurons (channels) of the analysed layer: valid neuron ids are 0 … K−1."""
        return int(self.store.array("activations", "benign_maps").shape[1])

    @cached_property
    def rf_size(self) -> tuple[int, int]:
        """Default RF size: the input size (H, W)."""
        shape = self.store.config["model"]["input_shape"]
        return int(shape[1]), int(shape[2])

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
    def model(self) -> AnalysedModel:
        """The model of the store (loaded on first use)."""
        if self._model is None:
            config = self.store.config["model"]
            model = load_model(config["spec"], config.get("weights"), class_names=config["class_names"],
                               input_shape=tuple(config["input_shape"]), analysed_layer=config["analysed_layer"],
                               dense_layer=config["dense_layer"])
            if model_fingerprint(model) != config["sha256"]:
                raise StoreError(
                    f"the weights of model {config['spec']!r} differ from those the store at {self.store.root} was "
                    "prepared with; pass the original model to Session(model=...) or re-run `advlens prepare`"
                )
            self._model = model
        if self._model.device != self.device:
            self._model = self._model.to(self.device)
        return self._model

    def _check_pair(self, pair: int) -> int:
        pair = int(pair)
        if not 0 <= pair < self.num_pairs:
            raise IndexError(f"pair id {pair} outside 0..{self.num_pairs - 1}")
        return pair

    def _cached(self, key: tuple, compute):
        return self.cache.get_or_compute(key, compute)

    # ------------------------------------------------------------------ image space
    def overview(self) -> dict[str, np.ndarray]:
        """t-SNE coordinates (benign, adversarial) and labels of every pair for the Data Overview."""
        return self._cached(("overview",), lambda: {
            "benign_tsne": self.store.load("projections", "benign_tsne"),
            "adv_tsne": self.store.load("projections", "adv_tsne"),
            "label": self.table["label"], "benign_pred": self.table["benign_pred"],
            "adv_pred": self.table["adv_pred"],
        })

    def prediction_matrix(self, pairs: Sequence[int] | None = None) -> np.ndarray:
        """Counts of pairs per (true label, adversarial label). Shape: (C, C) int64."""
        index = slice(None) if pairs is None else np.asarray(pairs, dtype=np.int64)
        return measures.attack_matrix(self.table["label"][index], self.table["adv_pred"][index], self.num_classes)

    def pairs_in_cell(self, true_label: int, adversarial_label: int) -> np.ndarray:
        """Pair ids of one Prediction Matrix cell."""
        return np.flatnonzero((self.table["label"] == true_label) & (self.table["adv_pred"] == adversarial_label))

    def sort_pairs(self, pairs: Sequence[int], order: str = "perturbation_asc") -> np.ndarray:
        """Pair ids ordered by one of :data:`SORT_ORDERS` (ties by pair id)."""
        if order not in SORT_ORDERS:
            raise ValueError(f"order must be one of {SORT_ORDERS}, got {order!r}")
        ids = np.asarray(pairs, dtype=np.int64)
        t = self.table
        if order.startswith("perturbation"):
            key = t["l2"][ids] if order == "perturbation_asc" else -t["l2"][ids]
        elif order == "benign_drop":
            label = t["label"][ids]
            key = -(t["benign_probs"][ids, label] - t["adv_probs"][ids, label])
        else:
            target = t["adv_pred"][ids]
            key = -(t["adv_probs"][ids, target] - t["benign_probs"][ids, target])
        return ids[np.lexsort((ids, key))]

    def pair_images(self, pairs: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Benign and adversarial images. Shape: two (len(pairs), C, H, W) float32 in [0, 1]."""
        return self.store.pair_images(pairs)

    def pair_info(self, pair: int) -> dict:
        """Labels, probabilities and perturbation sizes of one pair."""
        pair = self._check_pair(pair)
        t = self.table
        label, adv = int(t["label"][pair]), int(t["adv_pred"][pair])
        return {"pair": pair, "dataset_index": int(t["dataset_index"][pair]), "label": label, "adv_pred": adv,
                "label_name": self.class_names[label], "adv_name": self.class_names[adv],
                "benign_prob": float(t["benign_probs"][pair, label]), "adv_prob": float(t["adv_probs"][pair, adv]),
                "benign_probs": t["benign_probs"][pair].copy(), "adv_probs": t["adv_probs"][pair].copy(),
                "l2": float(t["l2"][pair]), "linf": float(t["linf"][pair])}

    def class_subset(self, n_benign: int = 10, n_adversarial: int = 10) -> measures.ClassSubset:
        """Most attacked benign classes, then the most frequent adversarial labels among them (§6.2.2)."""
        return measures.class_subsets(self.table["label"], self.table["adv_pred"], n_benign, n_adversarial,
                                      self.num_classes)

    # ------------------------------------------------------------------ neuron space
    def feature_maps(self, pair: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Stored analysed-layer maps of a pair. Shape: two (K, h, w) float32."""
        pair = self._check_pair(pair)
        return self._cached(("maps", pair), lambda: (
            torch.from_numpy(self.store.array("activations", "benign_maps")[pair]),
            torch.from_numpy(self.store.array("activations", "adv_maps")[pair])))

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

    def receptive_fields(self, pair: int, quantile: float | None = None, value: float | None = None,
                         size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """RF masks of all neurons on the benign and adversarial image, with shared thresholds.

        Shape: two (K, H, W) bool, H × W = ``size`` (default: input size).
        """
        size = tuple(size) if size is not None else self.rf_size
        key = ("rf", self._check_pair(pair), quantile, value, size)

        def compute():
            benign, adversarial = self.feature_maps(pair)
            limit = self.thresholds(quantile, value)
            return measures.rf_masks(benign, limit, size), measures.rf_masks(adversarial, limit, size)
        return self._cached(key, compute)

    def vulnerability_maps(self, pair: int, k: int = 2, stride: int = 1) -> measures.VulnerabilityMaps:
        """bMap and aMap of a pair (Alg. 1). Shape: two (H, W) float32 on the CPU."""
        pair = self._check_pair(pair)

        def compute():
            benign, adversarial = (torch.from_numpy(a[0]) for a in self.pair_images([pair]))
            info = self.pair_info(pair)
            maps = measures.vulnerability_maps(self.model, benign, adversarial, info["label"], info["adv_pred"],
                                               k=k, stride=stride, device=self.device)
            return measures.VulnerabilityMaps(maps.bmap.cpu(), maps.amap.cpu())
        return self._cached(("vmap", pair, k, stride), compute)

    def vulnerability_masks(self, pair: int, top_percent: float = 20.0, k: int = 2,
                            stride: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """The binarized bMap and aMap (top ``top_percent`` %). Shape: two (H, W) bool."""
        bmap, amap = self.vulnerability_maps(pair, k, stride)
        return measures.binarize_top(bmap, top_percent), measures.binarize_top(amap, top_percent)

    def image_perturbation(self, pair: int, top_percent: float = 20.0, quantile: float | None = None,
                           k: int = 2, stride: int = 1) -> measures.ImagePerturbationScores:
        """IoU of each neuron's benign RF with the bMap mask and adversarial RF with the aMap mask."""
        key = ("ipm", self._check_pair(pair), top_percent, quantile, k, stride)

        def compute():
            benign_rf, adversarial_rf = self.receptive_fields(pair, quantile)
            bmask, amask = self.vulnerability_masks(pair, top_percent, k, stride)
            rf_size = tuple(benign_rf.shape[-2:])
            if tuple(bmask.shape) != rf_size:  # RFs at another size: compare at the RF size
                bmask, amask = (torch.nn.functional.interpolate(m[None, None].float(), size=rf_size)[0, 0] > 0.5
                                for m in (bmask, amask))
            return measures.image_perturbation_scores(benign_rf, adversarial_rf, bmask, amask)
        return self._cached(key, compute)

    def pooled(self, pair: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled penultimate vectors of a pair. Shape: two (D,) float32."""
        pair = self._check_pair(pair)
        return (torch.from_numpy(self.store.array("activations", "benign_pooled")[pair]),
                torch.from_numpy(self.store.array("activations", "adv_pooled")[pair]))

    def curves(self, pair: int) -> measures.ContributionCurves:
        """Activation × weight of the benign image (benign class) and adversarial image (adversarial class)."""
        info = self.pair_info(pair)
        benign, adversarial = self.pooled(pair)
        return measures.contribution_curves(benign, adversarial, self._statistics["dense_weight"], info["label"],
                                            info["adv_pred"])

    def bands(self, level: float = measures.DEFAULT_CONFIDENCE, kind: str = "ci") -> measures.Bands:
        """Class bands of activation × weight: confidence interval of the mean at ``level`` (``"ci"``)
        or the central ``level`` percentile range (``"percentile"``). Shape: (C, D) each."""
        stats = self._statistics

        def compute():
            if kind == "ci":
                return measures.class_bands(stats["class_mean"], stats["class_std"], stats["class_count"], level)
            if kind == "percentile":
                tail = 50.0 * (1.0 - level)
                return measures.percentile_bands(stats["class_percentiles"],
                                                 self._statistics_attrs["percentile_levels"], tail, 100.0 - tail)
            raise ValueError(f"kind must be 'ci' or 'percentile', got {kind!r}")
        return self._cached(("bands", level, kind), compute)

    def band_gap(self, pair: int, level: float = measures.DEFAULT_CONFIDENCE, kind: str = "ci") -> torch.Tensor:
        """Band gap per neuron for the pair's benign and adversarial classes. Shape: (D,)."""
        info = self.pair_info(pair)
        return measures.pair_band_gap(self.bands(level, kind), info["label"], info["adv_pred"])

    def substitution(self, pair: int) -> measures.NeuronSubstitution:
        """Probability changes when one neuron at a time takes its adversarial pooled value."""
        pair = self._check_pair(pair)

        def compute():
            info = self.pair_info(pair)
            benign, adversarial = self.pooled(pair)
            result = measures.neuron_substitution(self.model, benign, adversarial, info["label"], info["adv_pred"],
                                                  device=self.device)
            return measures.NeuronSubstitution(result.benign_drop.cpu(), result.adversarial_rise.cpu())
        return self._cached(("substitution", pair), compute)

    def neuron_ranking(self, pair: int, measure: str = "band_gap", *, top_percent: float = 20.0,
                       quantile: float | None = None, level: float = measures.DEFAULT_CONFIDENCE,
                       k: int = 2, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Neuron order (most vulnerable first) and the score of each neuron, by a :data:`NEURON_MEASURES`.

        Shape: order (K,) int64; scores (K,) float32 indexed by neuron id.
        """
        if measure == "band_gap":
            curves = self.curves(pair)
            scores = self.band_gap(pair, level).numpy()
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

    def clustering(self, pair: int, metric: str = "rf_l2", method: str = "average",
                   quantile: float | None = None) -> measures.NeuronClustering:
        """Hierarchical clustering of the analysed layer's neurons for a pair (§5.2.2)."""
        key = ("cluster", self._check_pair(pair), metric, method, quantile)

        def compute():
            if metric == "activation_l2":
                benign, adversarial = self.feature_maps(pair)
            else:
                benign, adversarial = self.receptive_fields(pair, quantile)
            return measures.NeuronClustering(metric, method).fit(benign, adversarial)
        return self._cached(key, compute)

    def combined_rf(self, pair: int, neurons: Sequence[int], op: str = "union",
                    quantile: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Union or intersection of the RFs of a set of neurons. Shape: two (H, W) bool."""
        benign, adversarial = self.receptive_fields(pair, quantile)
        index = np.asarray(neurons, dtype=np.int64)
        return (measures.combine_receptive_fields(benign, index, op),
                measures.combine_receptive_fields(adversarial, index, op))

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
        ids = np.arange(self.num_pairs) if pairs is None else np.asarray(pairs, dtype=np.int64)
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
