"""Reading the ``features`` stage: each channel's visualisation, dataset examples and activation statistics.

:class:`FeatureLibrary` is what the Model page (and a notebook) uses::

    library = Session(store).features          # or FeatureLibrary(open_store(path))
    library.layers()                           # ['stem', 'layer1.relu', …]
    library.visualizations("layer1")           # (K, c, H, W) float32 in [0, 1]
    library.examples("layer1", 5).patches      # (k, c, h, w): where the channel's top images excite it
    library.channel_stats("layer1", 5)         # quantiles of its activation, its activation on its image

Layers are named as in ``model.graph`` (the stage's ``layers`` attr, in order); a channel is an index
``0 … K−1`` of its layer. Unknown layers and channels out of range raise
:class:`~advlens.analysis.core.SelectionError`. The layout of the stored arrays is documented in
:class:`advlens.store.AnalysisStore`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from advlens.analysis.core import SelectionError, check_id
from advlens.errors import StoreError
from advlens.store import AnalysisStore

STAGE = "features"


@dataclass(frozen=True)
class ChannelExamples:
    """The top-k examined images of one channel, best first.

    Shape:
        indices: (k,) int64 dataset indices (the examined images, ``predict``'s ``dataset_index``).
        values: (k,) float32 the channel's maximal activation on each image.
        positions: (k, 2) int64 (row, column) of that maximum in the layer's feature map.
        windows: (k, 4) int64 (top, left, bottom, right) of the patch in the image (bottom/right
            exclusive; may extend outside the image, where the patch is 0).
        patches: (k, c, h, w) float32 in [0, 1], the receptive field of the maximal unit; None when
            the stage stored none for this layer (then ``windows`` locate them in the dataset images).
        labels, predictions: (k,) int64 each image's label and the model's prediction (from ``predict``).
    """

    layer: str
    channel: int
    indices: np.ndarray
    values: np.ndarray
    positions: np.ndarray
    windows: np.ndarray
    patches: np.ndarray | None
    labels: np.ndarray
    predictions: np.ndarray


@dataclass(frozen=True)
class ChannelStats:
    """One channel's activation over the examined images, and on its own visualisation.

    Attributes:
        quantile_levels: the levels of the quantiles below (0.5, 0.9, 0.95, 0.99).
        max_quantiles, mean_quantiles: quantiles of the channel's spatial-max / spatial-mean activation.
        max_mean: mean over the images of the spatial-max activation.
        vis_activation: spatial-mean activation on the channel's visualisation.
        accepted: whether ``vis_activation`` exceeds the ``acceptance_level`` quantile of the spatial mean.
    """

    layer: str
    channel: int
    quantile_levels: tuple[float, ...]
    max_quantiles: np.ndarray
    mean_quantiles: np.ndarray
    max_mean: float
    vis_activation: float
    acceptance_level: float
    accepted: bool


class FeatureLibrary:
    """The ``features`` stage of a store, read lazily and checked id by id.

    Args:
        store: an opened store holding the ``features`` stage.

    Raises:
        StoreError: the store has no ``features`` stage (the message names the command that adds it).
    """

    def __init__(self, store: AnalysisStore) -> None:
        if not store.has_stage(STAGE):
            raise StoreError(f"the store at {store.root} has no feature visualisations or dataset examples (stage "
                             f"{STAGE!r}); add them with `{store.add_stages_command(STAGE)}`")
        self.store = store
        self._group = store.group(STAGE)
        self.attrs: dict[str, Any] = self._group.attrs
        self._layers: list[str] = list(self.attrs["layers"])
        self._index = {layer: i for i, layer in enumerate(self._layers)}
        self._small: dict[tuple[int, str], np.ndarray] = {}
        self._predict: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FeatureLibrary({str(self.store.root)!r}, layers={self._layers})"

    # ------------------------------------------------------------------ ids
    def layers(self) -> list[str]:
        """The layers with features, in the model's execution order."""
        return list(self._layers)

    def has(self, layer: str) -> bool:
        """Whether ``layer`` (a model-graph name) has features in this store."""
        return layer in self._index

    def check_layer(self, layer: Any) -> int:
        """The position of ``layer`` in :meth:`layers`, else :class:`SelectionError` listing the layers."""
        if not isinstance(layer, str) or layer not in self._index:
            raise SelectionError(f"no features for layer {layer!r}; the store has features of "
                                 f"{', '.join(self._layers) or 'no layer'}")
        return self._index[layer]

    def num_channels(self, layer: str) -> int:
        """Channels of ``layer``: valid channel ids are 0 … K−1."""
        return int(self.attrs["channels"][self.check_layer(layer)])

    def check_channel(self, layer: str, channel: Any) -> tuple[int, int]:
        """(layer position, channel) checked, else :class:`SelectionError`."""
        index = self.check_layer(layer)
        return index, check_id(channel, int(self.attrs["channels"][index]), f"layer {layer!r} channel")

    # ------------------------------------------------------------------ settings and summaries
    @property
    def k(self) -> int:
        """Dataset examples per channel."""
        return int(self.attrs["k"])

    @property
    def quantile_levels(self) -> tuple[float, ...]:
        return tuple(self.attrs["quantile_levels"])

    def acceptance(self, layer: str) -> float:
        """Share of ``layer``'s channels whose visualisation passes the acceptance test (see :class:`ChannelStats`)."""
        accepted = self._accepted(self.check_layer(layer))
        return float(accepted.mean()) if accepted.size else 0.0

    # ------------------------------------------------------------------ arrays
    def _name(self, index: int, what: str) -> str:
        return f"L{index:02d}_{what}"

    def _whole(self, index: int, what: str) -> np.ndarray:
        """A small per-layer array (examples, statistics), read once and kept."""
        key = (index, what)
        with self._lock:
            if key not in self._small:
                self._small[key] = self._group[self._name(index, what)][...]
            return self._small[key]

    def _accepted(self, index: int) -> np.ndarray:
        level = self.quantile_levels.index(float(self.attrs["acceptance_level"]))
        return self._whole(index, "vis_activation") > self._whole(index, "mean_quantiles")[level]

    def visualization(self, layer: str, channel: int) -> np.ndarray:
        """The feature visualisation of one channel. Shape: (c, H, W) float32 in [0, 1]."""
        index, channel = self.check_channel(layer, channel)
        return np.asarray(self._group[self._name(index, "vis")][channel], dtype=np.float32)

    def visualizations(self, layer: str) -> np.ndarray:
        """Feature visualisations of every channel of ``layer``. Shape: (K, c, H, W) float32 in [0, 1]."""
        index = self.check_layer(layer)
        return np.asarray(self._group[self._name(index, "vis")][...], dtype=np.float32)

    def examples(self, layer: str, channel: int) -> ChannelExamples:
        """The top-k dataset examples of one channel (see :class:`ChannelExamples`)."""
        index, channel = self.check_channel(layer, channel)
        indices = self._whole(index, "example_index")[channel].copy()
        patches = None
        if self._name(index, "patches") in self._group:
            patches = np.asarray(self._group[self._name(index, "patches")][channel], dtype=np.float32)
        labels, predictions = self._predict_of(indices)
        return ChannelExamples(layer=layer, channel=channel, indices=indices,
                               values=self._whole(index, "example_value")[channel].copy(),
                               positions=self._whole(index, "example_position")[channel].copy(),
                               windows=self._whole(index, "example_window")[channel].copy(), patches=patches,
                               labels=labels, predictions=predictions)

    def _predict_of(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels and predictions of examined images, by dataset index (``predict`` stores them by index)."""
        with self._lock:
            if self._predict is None:
                predict = self.store.group("predict")
                self._predict = (predict["dataset_index"][...], predict["label"][...], predict["pred"][...])
            order, labels, predictions = self._predict
        rows = np.searchsorted(order, indices)
        if rows.size and (rows.max() >= len(order) or np.any(order[rows] != indices)):
            raise StoreError(f"the features of the store at {self.store.root} name images its predict stage does "
                             f"not hold; rebuild them with `{self.store.rebuild_command(STAGE)}`")
        return labels[rows].astype(np.int64), predictions[rows].astype(np.int64)

    def channel_stats(self, layer: str, channel: int) -> ChannelStats:
        """One channel's activation statistics (see :class:`ChannelStats`)."""
        index, channel = self.check_channel(layer, channel)
        return ChannelStats(layer=layer, channel=channel, quantile_levels=self.quantile_levels,
                            max_quantiles=self._whole(index, "max_quantiles")[:, channel].copy(),
                            mean_quantiles=self._whole(index, "mean_quantiles")[:, channel].copy(),
                            max_mean=float(self._whole(index, "max_mean")[channel]),
                            vis_activation=float(self._whole(index, "vis_activation")[channel]),
                            acceptance_level=float(self.attrs["acceptance_level"]),
                            accepted=bool(self._accepted(index)[channel]))


__all__ = ["FeatureLibrary", "ChannelExamples", "ChannelStats", "SelectionError"]
