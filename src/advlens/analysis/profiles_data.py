"""The data behind :class:`~advlens.analysis.profiles.ProfilesAnalysis`: the stored background and fit,
the background's activations (recomputed once from the stored images), and the records the Flow and
Layer Views draw.

The ``profiles`` stage (``advlens.pipeline.stages_profiles``) keeps, in the store group ``profiles``:
attrs ``layers``, the UMAP settings (``n_neighbors``, ``min_dist``, ``alignment_regularisation``,
``alignment_window_size``, ``random_state``) and timings; arrays ``background_row`` (n,) rows of the
``predict`` stage, ``background_label`` / ``background_pred`` (n,), ``background_images`` (n, c, h, w)
float32 in [0, 1] and ``embeddings`` (L, n) float32, the aligned fit of ``layers``. Activations are not
stored (hundreds of MB): they come back from one capture of the background images.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from advlens.errors import StoreError
from advlens.pipeline.stages_profiles import FIT_PARAMS, STAGE
from advlens.profiles import (
    BundledLines,
    ClassChange,
    Connections,
    Divergence,
    DivergenceRanking,
    DivergingStrength,
    ProfileHistograms,
)
from advlens.store import AnalysisStore

CAPTURE_BATCH = 256


@dataclass(frozen=True, eq=False)
class ProfilesBackground:
    """The stored background of the profiles and its aligned fit of the stage's layers.

    Shape:
        rows, labels, preds: (n,) int64; images: (n, c, h, w) float32 in [0, 1]; embeddings: (n, L)
        float32 (NaN: disconnected on that axis).
    """

    layers: tuple[str, ...]
    rows: np.ndarray
    labels: np.ndarray
    preds: np.ndarray
    images: np.ndarray
    embeddings: np.ndarray
    params: dict[str, Any]
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(len(self.rows))


def read_background(store: AnalysisStore) -> ProfilesBackground:
    """The ``profiles`` stage of ``store`` (:class:`StoreError` naming the command that adds it)."""
    group = store.group(STAGE)
    attrs = dict(group.attrs)
    layers = tuple(str(name) for name in attrs["layers"])
    embeddings = np.asarray(group["embeddings"][...], dtype=np.float32)
    rows = np.asarray(group["background_row"][...], dtype=np.int64)
    if embeddings.shape != (len(layers), len(rows)):
        raise store.damaged(STAGE, "embeddings", f"shape {embeddings.shape}, expected (L, n) = "
                                                 f"({len(layers)}, {len(rows)})")
    params = {name: attrs[name] for name in FIT_PARAMS if name in attrs}
    return ProfilesBackground(layers=layers, rows=rows,
                              labels=np.asarray(group["background_label"][...], dtype=np.int64),
                              preds=np.asarray(group["background_pred"][...], dtype=np.int64),
                              images=np.asarray(group["background_images"][...], dtype=np.float32),
                              embeddings=np.ascontiguousarray(embeddings.T), params=params, attrs=attrs)


class BackgroundActivations:
    """The background's full (unpooled) outputs of any layer, captured on first use and kept.

    Missing layers asked for together are captured in one forward pass over the background; a lock
    makes concurrent requests (the app's callbacks) wait for one capture instead of running two.
    """

    def __init__(self, model, images: np.ndarray) -> None:
        self.model = model
        self.images = images
        self._layers: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def __call__(self, layers: Sequence[str]) -> list[np.ndarray]:
        """One float32 (n, C, H, W) or (n, D) array per layer, in the order asked."""
        with self._lock:
            missing = [name for name in dict.fromkeys(layers) if name not in self._layers]
            if missing:
                captured = self.model.capture(torch.from_numpy(self.images), missing, reduce="none",
                                              batch_size=CAPTURE_BATCH)
                for name, value in captured.items():
                    self._layers[name] = np.ascontiguousarray(value.numpy(), dtype=np.float32)
            return [self._layers[name] for name in layers]

    def layers(self) -> list[str]:
        """The layers captured so far."""
        with self._lock:
            return list(self._layers)


@dataclass(frozen=True, eq=False)
class PairProfiles:
    """A pair's positions on the axes of a layer selection.

    Shape: benign, adversarial: (L,) float32.
    """

    pair: int
    layers: tuple[str, ...]
    benign: np.ndarray
    adversarial: np.ndarray


@dataclass(frozen=True, eq=False)
class FlowData:
    """Everything the Flow View draws for one pair on one layer selection.

    Attributes:
        background: the background's profiles (NaN: disconnected, not drawn).
        labels: the background's labels the view colours by (``colour_by``: true or predicted).
        classes: the class ids present in ``labels``, ascending.
        value_range: the one y-range of every axis (background and foreground).
        lines: the bundled background lines (``mode="lines"``), else None.
        histograms: the per-class histograms over the shared bins (also the fingerprints' counts).
        fingerprints: each class's share of its images per bin and axis.
        benign, adversarial: the pair's profile.
        divergence: the pair's diverging point and per-axis evidence.
        disconnected: background images without a position, per axis.

    Shape:
        background: (n, L); labels: (n,); fingerprints: (K, B, L); benign, adversarial: (L,).
    """

    pair: int
    layers: tuple[str, ...]
    colour_by: str
    mode: str
    background: np.ndarray
    labels: np.ndarray
    classes: np.ndarray
    value_range: tuple[float, float]
    lines: BundledLines | None
    histograms: ProfileHistograms
    fingerprints: np.ndarray
    benign: np.ndarray
    adversarial: np.ndarray
    divergence: Divergence
    disconnected: np.ndarray


@dataclass(frozen=True, eq=False)
class LayerView:
    """One layer over one set of images, reduced (paper 002 §4.4; spec-002 §1.7).

    Attributes:
        image_set: ``pair``, ``class:K`` (background images predicted K) or ``group`` (the brushed
            background images); set_size: its images.
        unit_scalar: the resolved unit scalar (``max`` or ``abs_sum``).
        reduced: the reduced data (one output's shape).
        values: the heatmap's value per unit (for ``difference``: the adversarial's unit scalar minus
            the benign's, Fig. 6); signed: whether they are drawn with the signed (RdBu) scale.
        grid: ``values`` on the ceil(√C)² grid (NaN after the last unit).
        units: the units whose maps are shown (all when C ≤ 32, else the 20 largest |values|).
        maps: the reduced maps of ``units``; benign_maps, adversarial_maps: the pair's maps of them
            (None for a vector layer).
        ranking: the pair's divergence ranking (top 20 by Σ|adv − benign|).
        strength: Fig. 9b data; class_change: Fig. 7 data (None when the background has no image
            predicted as one of the pair's two classes: ``class_change_problem`` says which).

    Shape:
        reduced: (C, H, W) or (C,); values: (C,); grid: (S, S); maps etc.: (k, H, W).
    """

    pair: int
    layer: str
    reduction: str
    image_set: str
    set_size: int
    unit_scalar: str
    reduced: np.ndarray
    values: np.ndarray
    signed: bool
    grid: np.ndarray
    units: np.ndarray
    maps: np.ndarray | None
    benign_maps: np.ndarray | None
    adversarial_maps: np.ndarray | None
    ranking: DivergenceRanking
    strength: DivergingStrength
    class_change: ClassChange | None
    class_change_problem: str | None = None


@dataclass(frozen=True, eq=False)
class UnitDetail:
    """One unit of a layer for a pair: its maps, its strongest connections and feature visualisations.

    Attributes:
        benign_value, adversarial_value: the unit's scalar on each image (``unit_scalar``).
        visualization: the unit's feature visualisation (None without features of this layer:
            ``features_problem`` says why); incoming/outgoing_visualizations: the connected units'
            visualisations (None where the features stage has none of that layer).
        incoming_layer, outgoing_layer: the layers whose features show the connected units.

    Shape:
        benign_map, adversarial_map: (H, W) (None for a vector layer); visualization: (c, H, W).
    """

    pair: int
    layer: str
    unit: int
    unit_scalar: str
    benign_value: float
    adversarial_value: float
    benign_map: np.ndarray | None
    adversarial_map: np.ndarray | None
    connections: Connections
    visualization: np.ndarray | None
    features_problem: str | None
    incoming_layer: str | None
    outgoing_layer: str | None
    incoming_visualizations: list[np.ndarray | None]
    outgoing_visualizations: list[np.ndarray | None]


def parse_set(value: Any, num_classes: int) -> tuple[str, int | None]:
    """``pair``, ``group`` or ``class:K`` → (kind, class); :class:`StoreError` never, ``ValueError`` text
    for anything else (the caller turns it into its own error)."""
    if value in ("pair", "group"):
        return str(value), None
    if isinstance(value, str) and value.startswith("class:") and value[6:].isdigit():
        label = int(value[6:])
        if label < num_classes:
            return "class", label
    raise ValueError(f"image set {str(value)[:40]!r} is not 'pair', 'group' or 'class:K' with K in "
                     f"0 … {num_classes - 1}")


def check_stage_layers(store: AnalysisStore, background: ProfilesBackground, graph) -> None:
    """The stage's layers must be layers of the session's model."""
    unknown = [name for name in background.layers if name not in graph]
    if unknown:
        raise StoreError(f"the profiles stage of the store at {store.root} names layers the model does not have "
                         f"({', '.join(unknown)}); rebuild it with `{store.rebuild_command(STAGE)}`")


__all__ = ["STAGE", "ProfilesBackground", "BackgroundActivations", "PairProfiles", "FlowData", "LayerView",
           "UnitDetail", "read_background", "parse_set"]
