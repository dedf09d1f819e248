"""Pure computations of the activation-profiles system (paper 002; spec-002 §1).

Aligned 1-D UMAP profiles of several layers (:class:`ActivationProfiles`), the diverging point of a
pair, the background flow's bundled lines, profile histograms and class fingerprints, and the Layer
View's data: reductions, unit scalars, the divergence ranking, a unit's strongest connections and the
export. Functions take NumPy arrays or tensors and return NumPy arrays; nothing here reads a store or
imports Dash.
"""

from advlens.profiles.aligned import RECOMMENDED_BACKGROUND, ActivationProfiles
from advlens.profiles.charts import ClassChange, DivergingStrength, class_change, diverging_strength
from advlens.profiles.bundling import DEFAULT_BUNDLING, BundledLines, bundle
from advlens.profiles.colour import SIGNED_COLORSCALE, symmetric_range
from advlens.profiles.connections import TOP_CONNECTIONS, Connection, Connections, strongest_connections
from advlens.profiles.divergence import (
    DEFAULT_THRESHOLD,
    Divergence,
    axis_scales,
    diverging_point,
    median_pairwise_distance,
    nearest_class_by_median,
)
from advlens.profiles.export import UNIT_COLUMNS, LayerExport, layer_export
from advlens.profiles.histograms import DEFAULT_BINS, ProfileHistograms, fingerprints, histograms, shared_range
from advlens.profiles.layers import (
    PROFILE_PRESETS,
    block_layers,
    default_profile_layers,
    post_activation,
    profile_preset,
    weighted_layers,
)
from advlens.profiles.placement import PlacementParams, place
from advlens.profiles.ranking import TOP_DIVERGING, DivergenceRanking, divergence_ranking, divergence_scores
from advlens.profiles.reductions import (
    REDUCTIONS,
    UNIT_SCALARS,
    reduce,
    resolve_unit_scalar,
    scalar_difference,
    top_units,
    unit_grid,
    unit_scalars,
)

__all__ = [
    "DEFAULT_BINS", "DEFAULT_BUNDLING", "DEFAULT_THRESHOLD", "PROFILE_PRESETS", "RECOMMENDED_BACKGROUND",
    "REDUCTIONS", "SIGNED_COLORSCALE", "TOP_CONNECTIONS", "TOP_DIVERGING", "UNIT_COLUMNS", "UNIT_SCALARS",
    "ActivationProfiles", "BundledLines", "ClassChange", "DivergingStrength", "class_change", "diverging_strength", "Connection", "Connections", "Divergence", "DivergenceRanking",
    "LayerExport", "PlacementParams", "ProfileHistograms", "axis_scales", "block_layers", "bundle",
    "default_profile_layers", "divergence_ranking", "divergence_scores", "diverging_point", "fingerprints",
    "histograms", "layer_export", "median_pairwise_distance", "nearest_class_by_median", "place",
    "post_activation", "profile_preset", "reduce", "resolve_unit_scalar", "scalar_difference",
    "shared_range", "strongest_connections", "symmetric_range", "top_units", "unit_grid", "unit_scalars",
    "weighted_layers",
]
