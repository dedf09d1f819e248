"""paper 002's activation profiles (spec-002): the stored aligned fit, a pair's profiles, the Flow and Layer Views' data.

:class:`ProfilesAnalysis` is mixed into :class:`advlens.analysis.Session`::

    session.has_profiles()                          # the store's ``profiles`` stage
    session.profile_layers()                        # its axes, e.g. ['layer1', 'layer2', 'layer3', 'layer4', 'fc']
    flow = session.flow_data(12)                    # background lines, fingerprints, the pair, its diverging point
    session.pair_divergence(12).describe(flow.layers)   # 'diverges between layer2 and layer3'
    view = session.layer_view(12, "layer3", "difference")   # unit heatmap, maps, ranking, Fig. 7 / 9b data
    session.unit_detail(12, "layer3", 40).connections      # top-5 in/out kernels
    session.fit_profiles(["layer2", "layer2.conv1", ...])  # another selection (kept in the store)

The background's activations are recomputed once from the stored background images (one capture of
every layer asked for) and kept for the session; a pair's profiles come from placing its two images on
the fitted axes (:meth:`advlens.profiles.ActivationProfiles.transform`), which never refits. Everything
is cached in the session.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from advlens.analysis.core import SelectionError, check_id
from advlens.analysis.profiles_base import COLOUR_BY, ProfilesBase
from advlens.analysis.profiles_data import FlowData, LayerView, PairProfiles, ProfilesBackground, UnitDetail
from advlens.analysis.profiles_layer import EXPORT_FORMATS, IMAGES, ProfilesLayers
from advlens.analysis.profiles_raw import raw_check, squared_norms
from advlens.errors import StoreError
from advlens.profiles import (
    DEFAULT_BINS,
    DEFAULT_BUNDLING,
    DEFAULT_THRESHOLD,
    ActivationProfiles,
    Divergence,
    bundle,
    diverging_point,
    fingerprints,
    histograms,
    median_pairwise_distance,
)

logger = logging.getLogger(__name__)

FLOW_MODES = ("lines", "histograms")
RAW_SCALE_SAMPLE = 500
"""Background images the raw-space scale (median pairwise distance per layer) is estimated on: the full
O(n²·D) over 2,000 images of a 25,088-value layer costs tens of seconds, 500 images a second."""


class ProfilesAnalysis(ProfilesLayers):
    """The profiles part of a :class:`~advlens.analysis.Session` (paper 002, spec-002)."""

    # ------------------------------------------------------------------ fits of layer selections
    def profiles_selection(self, layers: Sequence[str] | None = None) -> np.ndarray | None:
        """The kept aligned fit of a layer selection on the stage's background, or None when it has not
        been fitted yet (:meth:`fit_profiles` fits it). Shape: (n, L) float32."""
        layers = self.check_profile_layers(layers)
        background = self.profiles_background()
        if layers == background.layers:
            return background.embeddings
        from advlens.pipeline.stages_profiles import stored_profiles_selection  # noqa: PLC0415

        found = stored_profiles_selection(self.store, list(layers))
        return None if found is None else np.ascontiguousarray(np.asarray(found, dtype=np.float32).T)

    def fit_profiles(self, layers: Sequence[str],
                     progress: Callable[[float, str], None] | None = None) -> np.ndarray:
        """Fit the aligned axes of another layer selection on the stage's background and keep the fit in
        the store (a minute or more: the page runs it as a job). ``progress(fraction, message)`` is called
        as it goes. Shape: returns (n, L) float32."""
        layers = self.check_profile_layers(layers)
        found = self.profiles_selection(layers)
        if found is not None:
            return found
        from advlens.pipeline.stages_profiles import fit_profiles_selection  # noqa: PLC0415

        fitted = fit_profiles_selection(self.store, self.model, list(layers), progress=progress)
        return np.ascontiguousarray(np.asarray(fitted, dtype=np.float32).T)

    def profiles_fit(self, layers: Sequence[str] | None = None) -> ActivationProfiles:
        """The fitted profiles of a selection, restored from the kept fit and the recomputed background
        activations (:class:`StoreError` when the selection has not been fitted)."""
        layers = self.check_profile_layers(layers)

        def restore() -> ActivationProfiles:
            embeddings = self.profiles_selection(layers)
            if embeddings is None:
                raise StoreError(f"the layers {', '.join(layers)} have no fitted profiles in the store at "
                                 f"{self.store.root} yet; fit them with session.fit_profiles([...]) (the Profiles "
                                 "page does it as a job)")
            return ActivationProfiles.from_embeddings(self.background_activations(layers), embeddings,
                                                      **self.profiles_background().params)
        return self._cached(("profiles-fit", layers), restore)

    # ------------------------------------------------------------------ a pair

    def profiles_of_pair(self, pair: int, layers: Sequence[str] | None = None) -> PairProfiles:
        """The pair's positions on the fitted axes of a selection (each image placed on its own)."""
        pair = self.check_pair(pair)
        layers = self.check_profile_layers(layers)

        def compute() -> PairProfiles:
            benign, adversarial = self.pair_outputs(pair, layers)
            stacked = [np.stack([b, a]) for b, a in zip(benign, adversarial)]
            positions = self.profiles_fit(layers).transform(stacked)
            return PairProfiles(pair, layers, positions[0], positions[1])
        return self._cached(("profiles-pair", pair, layers), compute)

    def _raw_scales(self, layers: tuple[str, ...]) -> np.ndarray:
        """Median pairwise background distance of each layer, over a seeded sample of the background."""
        def compute(name: str) -> float:
            activations = self.background_activations([name])[0]
            flat = activations.reshape(len(activations), -1)
            if len(flat) > RAW_SCALE_SAMPLE:
                flat = flat[np.sort(np.random.default_rng(0).choice(len(flat), RAW_SCALE_SAMPLE, replace=False))]
            return median_pairwise_distance(flat)
        return np.array([self._cached(("profiles-raw-scale", name), lambda n=name: compute(n)) for name in layers])

    def _raw_norms(self, layers: tuple[str, ...]) -> list[np.ndarray]:
        """Squared row norms of each layer's flattened background (kept per layer)."""
        def compute(name: str) -> np.ndarray:
            activations = self.background_activations([name])[0]
            return squared_norms(activations.reshape(len(activations), -1))
        return [self._cached(("profiles-raw-norms", name), lambda n=name: compute(n)) for name in layers]

    def pair_divergence(self, pair: int, layers: Sequence[str] | None = None, colour_by: str = "pred",
                        threshold: float = DEFAULT_THRESHOLD) -> Divergence:
        """Where the pair's profiles part (G-11), with the per-axis class affinities (by ``colour_by``
        labels) and the raw-space check (distances of the full outputs, nearest background neighbours)."""
        pair = self.check_pair(pair)
        layers = self.check_profile_layers(layers)
        labels = self.background_labels(colour_by)

        def compute() -> Divergence:
            profiles = self.profiles_of_pair(pair, layers)
            benign, adversarial = self.pair_outputs(pair, layers)
            found = diverging_point(profiles.benign, profiles.adversarial, self.profiles_fit(layers).embeddings_,
                                    labels=labels, threshold=threshold)
            raw = raw_check(benign, adversarial, self.background_activations(layers), self._raw_norms(layers),
                            labels, self._raw_scales(layers))
            return replace(found, raw_affinity_a=raw.affinity_a, raw_affinity_b=raw.affinity_b,
                           raw_distance=raw.distance, cosine_distance=raw.cosine)
        return self._cached(("profiles-divergence", pair, layers, colour_by, float(threshold)), compute)

    # ------------------------------------------------------------------ the Flow View
    def flow_data(self, pair: int, colour_by: str = "pred", mode: str = "lines", layers: Sequence[str] | None = None,
                  beta: float = DEFAULT_BUNDLING, bins: int = DEFAULT_BINS,
                  threshold: float = DEFAULT_THRESHOLD) -> FlowData:
        """The Flow View of ``pair`` on a layer selection (the stage's by default): the background as
        bundled lines (``mode="lines"``) or only histograms, the class fingerprints, the pair and its
        diverging point (reported when the largest jump reaches ``threshold`` IQRs). Labels are the background's
        predictions or true labels (``colour_by``)."""
        pair = self.check_pair(pair)
        layers = self.check_profile_layers(layers)
        mode = self._choice(mode, FLOW_MODES, "flow mode")
        labels = self.background_labels(colour_by)
        fit = self.profiles_fit(layers)
        background = fit.embeddings_
        profiles = self.profiles_of_pair(pair, layers)
        finite = np.concatenate([background[np.isfinite(background)],
                                 profiles.benign[np.isfinite(profiles.benign)],
                                 profiles.adversarial[np.isfinite(profiles.adversarial)]])
        low, high = float(finite.min()), float(finite.max())
        pad = 0.03 * (high - low) if high > low else 0.5
        value_range = (low - pad, high + pad)
        hist = self._cached(("profiles-histograms", layers, colour_by, bins, value_range),
                            lambda: histograms(background, labels, bins=bins, value_range=value_range))
        lines = None
        if mode == "lines":
            lines = self._cached(("profiles-lines", layers, colour_by, float(beta)),
                                 lambda: bundle(background, labels, beta=beta))
        return FlowData(pair=pair, layers=layers, colour_by=colour_by, mode=mode, background=background,
                        labels=labels, classes=hist.classes, value_range=value_range, lines=lines, histograms=hist,
                        fingerprints=fingerprints(hist), benign=profiles.benign, adversarial=profiles.adversarial,
                        divergence=self.pair_divergence(pair, layers, colour_by, threshold), disconnected=fit.n_disconnected_)

    def drill_down(self, layers: Sequence[str] | None, segment: int) -> list[str]:
        """The layers on the main path from axis ``segment`` to axis ``segment + 1``, both included (G-24):
        the selection that opens the segment between two axes."""
        layers = self.check_profile_layers(layers)
        segment = check_id(segment, len(layers) - 1, "axis gap")
        return self.model.graph.between(layers[segment], layers[segment + 1])

    def brushed_group(self, layer: str, low: float, high: float, layers: Sequence[str] | None = None) -> np.ndarray:
        """Background images whose position on ``layer``'s axis lies in [low, high] (G-22). Shape: (m,) int64."""
        layers = self.check_profile_layers(layers)
        layer = self.check_profile_layer(layer)
        if layer not in layers:
            raise SelectionError(f"layer {layer!r} is not an axis of the selection {', '.join(layers)}")
        if not all(isinstance(v, (int, float)) and np.isfinite(v) for v in (low, high)) or low > high:
            raise SelectionError(f"a brushed interval needs two finite numbers low ≤ high, got {low!r}, {high!r}")
        column = self.profiles_fit(layers).embeddings_[:, layers.index(layer)]
        return np.flatnonzero((column >= low) & (column <= high)).astype(np.int64)


__all__ = ["ProfilesAnalysis", "ProfilesBase", "ProfilesLayers", "ProfilesBackground", "PairProfiles", "FlowData",
           "LayerView", "UnitDetail", "COLOUR_BY", "FLOW_MODES", "IMAGES", "EXPORT_FORMATS"]
